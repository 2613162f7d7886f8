//! Command-line options shared by the commands that run a local model (`score`, `generate`):
//! which model, on which device, how many threads, offline hub access, and chat wrapping.

use anyhow::{Context, Result};
use candor_infer::{DeviceSpec, LanguageModel, LoadOptions, ModelSpec};
use clap::Args;

/// Where the default model lives after `scripts/fetch-default-model.sh`.
pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Model selection and runtime options.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model: a .gguf file, a directory with config.json + *.safetensors + tokenizer.json, or
    /// hf:owner/repo[:file.gguf].
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Device: cpu, cuda, cuda:N or metal (GPU devices need a build with that cargo feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute threads (default: all cores). More threads than cores slows candle down badly.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Use only the local Hugging Face cache for hf: models, never the network
    /// (also on when HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// Wrap the prompt in the model's chat template as one user message (with the template's
    /// generation prompt appended).
    #[arg(long)]
    pub chat: bool,
}

impl ModelArgs {
    /// Load the model these options describe.
    pub fn load(&self) -> Result<LanguageModel> {
        if let Some(threads) = self.threads {
            candor_infer::set_thread_count(threads);
        }
        let spec: ModelSpec = self.model.parse()?;
        let device: DeviceSpec = self.device.parse()?;
        let options = LoadOptions {
            device,
            offline: self.offline,
            ..LoadOptions::default()
        };
        LanguageModel::load(&spec, &options)
            .with_context(|| format!("loading model {}", self.model))
    }

    /// The prompt text as the model will see it: chat-wrapped with `--chat`, verbatim otherwise.
    pub fn prompt_text(&self, model: &LanguageModel, prompt: &str) -> Result<String> {
        match self.chat {
            true => Ok(model.chat_prompt(prompt)?),
            false => Ok(prompt.to_string()),
        }
    }
}
