//! The local model backend of Candor: a model loaded by `candor-infer` (GGUF or safetensors, run
//! exactly in f32 on candle) behind the [`ModelBackend`] trait of `candor-backend`, so the run
//! engine can collect both signals from it without naming candle. It also owns the model's
//! provenance for the manifest: the weights' content hash and storage types ([`weights`]).
//!
//! ```no_run
//! use candor_backend::ModelBackend;
//! use candor_local::{LocalBackend, LocalModelOptions};
//!
//! let options = LocalModelOptions {
//!     spec: "models/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
//!     ..LocalModelOptions::default()
//! };
//! let backend = LocalBackend::new(options.load()?, &options)?;
//! let prompt = backend.chat_prompt("Which emotion is this? I won!")?;
//! let prefix = backend.prefill(&backend.encode(&format!("{prompt}Label:"))?)?;
//! let scores = backend.score_labels(&prefix, &[" joy".into(), " anger".into()])?;
//! println!("{:?} (sha256 {})", scores, backend.identity().weights.sha256);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// Input never panics the library: no unwrap/expect outside tests (errors name what was wrong).
#![deny(clippy::unwrap_used, clippy::expect_used)]

mod error;
pub mod weights;

pub use error::{LocalError, Result};

use candor_backend::{
    BackendError, Capabilities, ConstrainedGeneration, ConstrainedOptions, GeneratedNumber, Generation, LabelScore, NumberScale, Sampling,
    LabelScores, ModelBackend, ModelIdentity, PromptLogProbs, PromptState, StopReason, TokenLogProb,
};
use candor_infer::{DeviceSpec, LanguageModel, LoadOptions, ModelSpec, WeightStorage};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Which local model to load and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalModelOptions {
    /// A `.gguf` file, a directory with `config.json` + `*.safetensors` + tokenizer, or
    /// `hf:owner/repo[:file]`.
    pub spec: String,
    /// `cpu`, `cuda`, `cuda:N` or `metal`.
    pub device: String,
    /// Compute threads (`None`: all cores).
    pub threads: Option<usize>,
    /// GGUF weight storage (`None`: the loader's choice, see `candor_infer::LoadOptions::weights`).
    pub weights: Option<WeightStorage>,
    /// Use only the local Hugging Face cache for `hf:` models.
    pub offline: bool,
}

impl Default for LocalModelOptions {
    fn default() -> Self {
        Self {
            spec: String::new(),
            device: "cpu".into(),
            threads: None,
            weights: None,
            offline: false,
        }
    }
}

impl LocalModelOptions {
    /// Loads the model these options describe (sets the thread count first).
    pub fn load(&self) -> Result<LanguageModel> {
        if let Some(threads) = self.threads {
            candor_infer::set_thread_count(threads);
        }
        let spec: ModelSpec = self.spec.parse()?;
        let device: DeviceSpec = self.device.parse()?;
        let options = LoadOptions {
            device,
            offline: self.offline,
            weights: self.weights,
            ..LoadOptions::default()
        };
        LanguageModel::load(&spec, &options).map_err(|source| LocalError::Failed {
            context: format!("loading model {}", self.spec),
            source: Box::new(source),
        })
    }
}

/// Most prompts [`LocalBackend`] suggests keeping in flight: beyond this the per-sequence work
/// (attention, logits) dominates a decode step on a CPU and batching gains little more.
pub const MAX_SUGGESTED_BATCH: usize = 8;

/// A loaded local model as a [`ModelBackend`].
pub struct LocalBackend {
    model: LanguageModel,
    identity: ModelIdentity,
}

/// A local prompt state: the model's KV cache and next-token logits (cheap to clone).
#[derive(Debug, Clone)]
pub struct LocalPrefix(candor_infer::Prefix);

impl PromptState for LocalPrefix {
    fn tokens(&self) -> &[u32] {
        self.0.tokens()
    }
}

impl LocalBackend {
    /// Wraps `model`, loaded with `options`, and hashes its weights for the manifest.
    pub fn new(model: LanguageModel, options: &LocalModelOptions) -> Result<Self> {
        let config = model.model().config();
        let chat_template = model.chat_template().source().map(str::to_string);
        let identity = ModelIdentity {
            spec: options.spec.clone(),
            source: model.source().to_string(),
            architecture: config.architecture.name().to_string(),
            context_length: config.context_length,
            vocab_size: config.vocab_size,
            weights: weights::inspect_weights(Path::new(model.source()))?,
            compute_dtype: match model.model().weight_storage() {
                WeightStorage::Dense => "f32".into(),
                WeightStorage::Quantized => "f32, quantized weights".into(),
            },
            device: options.device.clone(),
            chat_template_sha256: chat_template.as_deref().map(|source| weights::hex(&Sha256::digest(source.as_bytes()))),
            chat_template,
            server: None,
        };
        Ok(Self { model, identity })
    }
}

/// Candor-infer's sampling for the backend's.
fn infer_sampling(sampling: &Sampling) -> candor_infer::Sampling {
    candor_infer::Sampling { temperature: sampling.temperature, seed: sampling.seed, stream: sampling.stream }
}

/// Candor-infer's constrained options for the backend's.
fn infer_options(options: &ConstrainedOptions) -> candor_infer::ConstrainedOptions {
    let scale = match options.scale {
        NumberScale::Fraction => candor_infer::NumberScale::Fraction,
        NumberScale::Percent => candor_infer::NumberScale::Percent,
    };
    candor_infer::ConstrainedOptions { max_fraction_digits: options.max_fraction_digits, scale }
}

/// The backend's free generation for candor-infer's.
fn free_generation(generation: candor_infer::Generation) -> Generation {
    Generation {
        text: generation.text,
        token_ids: generation.token_ids,
        stop_reason: match generation.stop_reason {
            candor_infer::StopReason::Eos => StopReason::Eos,
            candor_infer::StopReason::MaxTokens => StopReason::MaxTokens,
            candor_infer::StopReason::ContextFull => StopReason::ContextFull,
        },
    }
}

/// A constrained dict in the backend's terms.
fn constrained_generation(generation: candor_infer::ConstrainedGeneration) -> ConstrainedGeneration {
    ConstrainedGeneration {
        text: generation.text,
        numbers: generation
            .numbers
            .into_iter()
            .map(|number| GeneratedNumber {
                label: number.label,
                text: number.text,
                value: number.value,
                token_ids: number.token_ids,
                log_prob: number.log_prob,
                masked_log_prob: number.masked_log_prob,
            })
            .collect(),
    }
}

/// The model's own error, passed through unchanged.
fn model_error(error: candor_infer::InferError) -> BackendError {
    BackendError::Model(Box::new(error))
}

impl ModelBackend for LocalBackend {
    type Prefix = LocalPrefix;

    fn identity(&self) -> &ModelIdentity {
        &self.identity
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            exact_log_probs: true,
            constrained_generation: true,
            batched_continuations: true,
            batched_generation: true,
            sampled_generation: true,
            constrained_percentages: true,
        }
    }

    /// Up to [`MAX_SUGGESTED_BATCH`] sequences whose caches (f32 keys and values of
    /// `positions` tokens, grown by half again) take at most a quarter of the available memory.
    fn suggested_batch(&self, positions: usize) -> usize {
        let per_sequence = (self.model.model().kv_bytes_per_position() * (positions + positions / 2 + 64)) as u64;
        let budget = candor_infer::available_memory_bytes().map_or(1 << 30, |bytes| bytes / 4);
        usize::try_from(budget / per_sequence.max(1)).unwrap_or(usize::MAX).clamp(1, MAX_SUGGESTED_BATCH)
    }

    fn chat_prompt(&self, user_message: &str) -> candor_backend::Result<String> {
        self.model.chat_prompt(user_message).map_err(model_error)
    }

    fn encode(&self, text: &str) -> candor_backend::Result<Vec<u32>> {
        self.model.encode(text).map_err(model_error)
    }

    fn stop_tokens(&self) -> Vec<u32> {
        self.model.tokenizer().eos_token_ids().to_vec()
    }

    fn decode(&self, ids: &[u32]) -> candor_backend::Result<String> {
        self.model.tokenizer().decode(ids).map_err(model_error)
    }

    fn prompt_log_probs(&self, prompts: &[Vec<u32>], top: usize, prefix_chunks: &[usize]) -> candor_backend::Result<Vec<PromptLogProbs>> {
        let all = self.model.prompt_log_probs(prompts, top, prefix_chunks).map_err(model_error)?;
        Ok(all
            .into_iter()
            .zip(prompts)
            .map(|(log_probs, prompt)| PromptLogProbs {
                tokens: log_probs
                    .tokens
                    .into_iter()
                    .zip(prompt)
                    .map(|(token, &token_id)| TokenLogProb { token_id, log_prob: token.log_prob, rank: token.rank, top: token.top })
                    .collect(),
                next: log_probs.next,
            })
            .collect())
    }

    fn has_chat_template(&self) -> bool {
        self.model.chat_template().source().is_some()
    }

    fn encode_prompt(&self, text: &str) -> candor_backend::Result<Vec<u32>> {
        self.model.encode_prompt(text).map_err(model_error)
    }

    fn prefill(&self, tokens: &[u32]) -> candor_backend::Result<LocalPrefix> {
        self.model.prefill(tokens).map(LocalPrefix).map_err(model_error)
    }

    fn extend(&self, prefix: &LocalPrefix, tokens: &[u32]) -> candor_backend::Result<LocalPrefix> {
        self.model.extend(&prefix.0, tokens).map(LocalPrefix).map_err(model_error)
    }

    fn score_labels(&self, prefix: &LocalPrefix, continuations: &[String]) -> candor_backend::Result<LabelScores> {
        let scores = self.model.score_labels(&prefix.0, continuations).map_err(model_error)?;
        Ok(LabelScores {
            labels: scores
                .labels
                .into_iter()
                .map(|score| LabelScore {
                    label: score.label,
                    token_ids: score.token_ids,
                    log_prob: score.log_prob,
                    first_token_log_prob: score.first_token_log_prob,
                })
                .collect(),
            first_token_mass_outside: scores.first_token_mass_outside,
        })
    }

    fn generate(&self, prefix: &LocalPrefix, max_tokens: usize) -> candor_backend::Result<Generation> {
        let generation = self.model.generate(&prefix.0, max_tokens).map_err(model_error)?;
        Ok(free_generation(generation))
    }

    fn generate_sampled_batch(
        &self,
        prefixes: &[&LocalPrefix],
        max_tokens: usize,
        samplings: &[Sampling],
    ) -> candor_backend::Result<Vec<Generation>> {
        prefixes
            .iter()
            .zip(samplings)
            .map(|(prefix, sampling)| {
                let generation =
                    self.model.generate_sampled(&prefix.0, max_tokens, &infer_sampling(sampling)).map_err(model_error)?;
                Ok(free_generation(generation))
            })
            .collect()
    }

    fn generate_constrained_sampled_batch(
        &self,
        prefixes: &[&LocalPrefix],
        labels: &[String],
        options: &ConstrainedOptions,
        samplings: &[Sampling],
    ) -> candor_backend::Result<Vec<ConstrainedGeneration>> {
        let prefixes: Vec<&candor_infer::Prefix> = prefixes.iter().map(|prefix| &prefix.0).collect();
        let samplings: Vec<candor_infer::Sampling> = samplings.iter().map(infer_sampling).collect();
        let dicts = self
            .model
            .generate_constrained_sampled_many(&prefixes, labels, &infer_options(options), &samplings)
            .map_err(model_error)?;
        Ok(dicts.into_iter().map(constrained_generation).collect())
    }

    fn generate_constrained(
        &self,
        prefix: &LocalPrefix,
        labels: &[String],
        options: &ConstrainedOptions,
    ) -> candor_backend::Result<ConstrainedGeneration> {
        let mut dicts = self.generate_constrained_batch(&[prefix], labels, options)?;
        Ok(dicts.remove(0))
    }

    fn generate_constrained_batch(
        &self,
        prefixes: &[&LocalPrefix],
        labels: &[String],
        options: &ConstrainedOptions,
    ) -> candor_backend::Result<Vec<ConstrainedGeneration>> {
        let options = infer_options(options);
        let prefixes: Vec<&candor_infer::Prefix> = prefixes.iter().map(|prefix| &prefix.0).collect();
        let dicts = self.model.generate_constrained_many(&prefixes, labels, &options).map_err(model_error)?;
        Ok(dicts.into_iter().map(constrained_generation).collect())
    }
}
