//! Command-line options shared by the commands that run a local model (`score`, `generate`):
//! which model, on which device, how many threads, how weights are held, offline hub access,
//! and chat wrapping.

use anyhow::Result;
use candor_infer::{LanguageModel, WeightStorage};
use candor_local::LocalModelOptions;
use clap::{Args, ValueEnum};

/// Where the default model lives after `scripts/fetch-default-model.sh`.
pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// How a local model runs: device, threads, weight storage, hub access (shared by every
/// command that loads one).
#[derive(Args, Debug, Clone)]
pub struct LocalModelFlags {
    /// Device: cpu, cuda, cuda:N or metal (GPU devices need a build with that cargo feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute threads (default: all cores). More threads than cores slows candle down badly.
    #[arg(long)]
    pub threads: Option<usize>,
    /// GGUF weight storage: dense (f32 at load), quantized (blocks kept, dequantized per row
    /// inside each product; activations stay f32 either way), or auto (quantized on the CPU
    /// when every format has Candor's kernels, else dense when the f32 weights fit).
    #[arg(long, value_enum, default_value_t = WeightsArg::Auto)]
    pub weights: WeightsArg,
    /// Use only the local Hugging Face cache for hf: models, never the network
    /// (also on when HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
}

impl LocalModelFlags {
    /// The local model `spec` run with these flags.
    pub fn options(&self, spec: &str) -> LocalModelOptions {
        LocalModelOptions {
            spec: spec.to_string(),
            device: self.device.clone(),
            threads: self.threads,
            weights: self.weights.storage(),
            offline: self.offline,
        }
    }
}

/// Model selection and runtime options.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model: a .gguf file, a directory with config.json + *.safetensors + tokenizer.json, or
    /// hf:owner/repo[:file.gguf].
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    #[command(flatten)]
    pub local: LocalModelFlags,
    /// Wrap the prompt in the model's chat template as one user message (with the template's
    /// generation prompt appended).
    #[arg(long)]
    pub chat: bool,
}

/// `--weights`: how GGUF weight matrices are held in memory.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsArg {
    /// On the CPU: quantized when every block format has Candor's own kernels (Q4_0, Q4_1,
    /// Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K), else dense when the f32 weights fit in available
    /// memory, else quantized. Dense on GPUs.
    Auto,
    /// Dequantized to f32 at load.
    Dense,
    /// Kept quantized, dequantized row by row inside each product.
    Quantized,
}

impl WeightsArg {
    /// The storage to request from the loader (`None`: let it choose).
    pub fn storage(self) -> Option<WeightStorage> {
        match self {
            Self::Auto => None,
            Self::Dense => Some(WeightStorage::Dense),
            Self::Quantized => Some(WeightStorage::Quantized),
        }
    }
}

impl ModelArgs {
    /// Load the model these options describe.
    pub fn load(&self) -> Result<LanguageModel> {
        Ok(self.local.options(&self.model).load()?)
    }

    /// The prompt text as the model will see it: chat-wrapped with `--chat`, verbatim otherwise.
    pub fn prompt_text(&self, model: &LanguageModel, prompt: &str) -> Result<String> {
        match self.chat {
            true => Ok(model.chat_prompt(prompt)?),
            false => Ok(prompt.to_string()),
        }
    }
}
