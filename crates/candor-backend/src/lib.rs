//! The seam between Candor's run engine and a model. A [`ModelBackend`] renders chat prompts,
//! tokenizes text exactly as the model sees it, processes a prompt into a reusable
//! [`ModelBackend::Prefix`], scores label continuations on top of a prefix, and generates free
//! or constrained verbalized answers. It says what it can do ([`Capabilities`]) and who it is
//! ([`ModelIdentity`], recorded in every run manifest).
//!
//! The run engine (`candor-experiment`) is written against this trait only and never names an
//! inference library; the local candle model implements it in `candor-local`, and a served model
//! (an inference server's API) can implement it too. This crate holds nothing but the contract:
//! no model code, no I/O.
//!
//! ```
//! use candor_backend::*;
//!
//! /// A toy backend: one token per byte, a fixed next-token distribution.
//! struct Bytes(ModelIdentity);
//!
//! #[derive(Clone)]
//! struct Seen(Vec<u32>);
//! impl PromptState for Seen {
//!     fn tokens(&self) -> &[u32] { &self.0 }
//! }
//!
//! impl ModelBackend for Bytes {
//!     type Prefix = Seen;
//!     fn identity(&self) -> &ModelIdentity { &self.0 }
//!     fn capabilities(&self) -> Capabilities {
//!         Capabilities { exact_log_probs: true, constrained_generation: false, batched_continuations: false, batched_generation: false, sampled_generation: false, constrained_percentages: false }
//!     }
//!     fn chat_prompt(&self, user_message: &str) -> Result<String> { Ok(format!("Q: {user_message}\nA:")) }
//!     fn encode(&self, text: &str) -> Result<Vec<u32>> { Ok(text.bytes().map(u32::from).collect()) }
//!     fn decode(&self, ids: &[u32]) -> Result<String> {
//!         Ok(String::from_utf8_lossy(&ids.iter().map(|&id| id as u8).collect::<Vec<u8>>()).into_owned())
//!     }
//!     fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> { self.encode(text) }
//!     fn has_chat_template(&self) -> bool { true }
//!     fn prefill(&self, tokens: &[u32]) -> Result<Seen> { Ok(Seen(tokens.to_vec())) }
//!     fn extend(&self, prefix: &Seen, tokens: &[u32]) -> Result<Seen> {
//!         Ok(Seen([prefix.0.as_slice(), tokens].concat()))
//!     }
//!     fn score_labels(&self, _prefix: &Seen, continuations: &[String]) -> Result<LabelScores> {
//!         // Every byte has probability 1/256.
//!         let per_byte = -(256f64).ln();
//!         let labels = continuations.iter().map(|label| LabelScore {
//!             label: label.clone(),
//!             token_ids: self.encode(label).unwrap(),
//!             log_prob: per_byte * label.len() as f64,
//!             first_token_log_prob: per_byte,
//!         }).collect();
//!         Ok(LabelScores { labels, first_token_mass_outside: 1.0 - 2.0 / 256.0 })
//!     }
//!     fn generate(&self, _prefix: &Seen, _max_tokens: usize) -> Result<Generation> {
//!         Err(BackendError::Unsupported("free generation".into()))
//!     }
//!     fn generate_constrained(&self, _: &Seen, _: &[String], _: &ConstrainedOptions) -> Result<ConstrainedGeneration> {
//!         Err(BackendError::Unsupported("constrained generation".into()))
//!     }
//! }
//!
//! let backend = Bytes(ModelIdentity::default());
//! let prompt = backend.chat_prompt("Is this joy?")?;
//! let prefix = backend.prefill(&backend.encode(&prompt)?)?;
//! let scores = backend.score_labels(&prefix, &[" yes".into(), " no".into()])?;
//! assert!(scores.labels[0].log_prob < scores.labels[1].log_prob);
//! # Ok::<(), BackendError>(())
//! ```

// Input never panics the library: no unwrap/expect outside tests (errors name what was wrong).
#![deny(clippy::unwrap_used, clippy::expect_used)]

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Result of backend operations.
pub type Result<T, E = BackendError> = std::result::Result<T, E>;

/// Why a backend could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot do this at all (e.g. constrained decoding on a server without it).
    #[error("the model backend does not support {0}")]
    Unsupported(String),
    /// The request is not valid for this model (a label that tokenizes to nothing, a prompt
    /// longer than the context window, ...).
    #[error("{0}")]
    Invalid(String),
    /// The model's own error, shown as it is (a local model's tokenizer or forward pass).
    #[error(transparent)]
    Model(Box<dyn std::error::Error + Send + Sync>),
    /// The backend failed while doing `context`; the source says how.
    #[error("{context}")]
    Failed {
        /// What was being done.
        context: String,
        /// The backend's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl BackendError {
    /// Wraps a backend's own error under what was being done.
    pub fn failed(context: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Failed { context: context.into(), source: Box::new(source) }
    }
}

/// A processed token sequence a backend can extend, score on or generate from. Cloning it is
/// how a caller branches (one prompt, many continuations); a backend makes that cheap.
pub trait PromptState: Clone {
    /// The tokens processed so far.
    fn tokens(&self) -> &[u32];
}

/// What a backend can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Label log-probabilities are those of the model's weights (not sampled, not rounded).
    pub exact_log_probs: bool,
    /// [`ModelBackend::generate_constrained`] is available.
    pub constrained_generation: bool,
    /// Several continuations of one prefix are scored in one batched forward.
    pub batched_continuations: bool,
    /// Several prompts' constrained dicts advance in one batched forward per step.
    pub batched_generation: bool,
    /// [`ModelBackend::generate_sampled_batch`] and
    /// [`ModelBackend::generate_constrained_sampled_batch`] are available (seeded temperature
    /// sampling, deterministic for a seed).
    #[serde(default)]
    pub sampled_generation: bool,
    /// Constrained dicts of whole percentages ([`NumberScale::Percent`]) are available.
    #[serde(default)]
    pub constrained_percentages: bool,
}

/// How a backend's weights are identified and stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightsInfo {
    /// `gguf_file`: sha256 of the file. `safetensors_files`: sha256 of the text
    /// `"<sha256>  <file name>\n"` over the `*.safetensors` files sorted by name.
    pub hash_kind: String,
    /// The hex digest.
    pub sha256: String,
    /// Number of tensors per storage type (e.g. `{"Q4_1": 168, "F32": 61}` or `{"BF16": 272}`).
    pub tensor_types: BTreeMap<String, usize>,
    /// GGUF `general.file_type` (llama.cpp's quantisation code), when present.
    pub gguf_file_type: Option<u32>,
}

/// Who the model is: the `model` section of a run manifest. Two runs are comparable only when
/// their identities are equal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIdentity {
    /// The model as the user named it (`--model`).
    pub spec: String,
    /// The local file or directory it was loaded from.
    pub source: String,
    /// Architecture name (e.g. `llama`).
    pub architecture: String,
    /// Context window in tokens.
    pub context_length: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Weights hash and storage types.
    pub weights: WeightsInfo,
    /// Type the forward pass computes in: `f32` (weights dequantized to it at load) or
    /// `f32, quantized weights` (dequantized per row inside each product).
    pub compute_dtype: String,
    /// The device the model runs on (`--device`).
    pub device: String,
    /// The chat template's Jinja source (`None`: the plain fallback, or a server that does
    /// not show it).
    pub chat_template: Option<String>,
    /// Hex sha256 of the chat template source (`None`: the plain fallback).
    pub chat_template_sha256: Option<String>,
    /// The inference server the model runs behind (`None`: a local model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerInfo>,
}

impl ModelIdentity {
    /// `local`, or the served engine's name (`vllm`, `sglang`, `llama-server`, `candor`): the
    /// `backend` of every record.
    pub fn backend(&self) -> &str {
        self.server.as_ref().map_or("local", |server| server.engine.as_str())
    }
}

/// The inference server of a served model, as it reports itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// The base URL requests go to (e.g. `http://127.0.0.1:8000`).
    pub url: String,
    /// `vllm`, `sglang`, `llama-server` or `candor`.
    pub engine: String,
    /// The model name requests carry (`--served-model`).
    pub model: String,
    /// Whatever identifies the weights on the server (its model path, revision or hash);
    /// resuming against a server whose revision differs is refused.
    pub revision: String,
    /// `exact (…)` or `approximate (…)`: whether label log-probs are the model's own.
    pub log_probs: String,
}

// The result types below mirror candor-infer's on purpose: candor-infer may depend on no other
// Candor crate and this crate may not reach candle, so each side owns its types and
// candor-local converts field by field.

/// The score of one label continuation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelScore {
    /// The continuation as given.
    pub label: String,
    /// Its tokens as appended to the prompt.
    pub token_ids: Vec<u32>,
    /// Sum over its tokens of log p(token | prompt, previous tokens), natural log.
    pub log_prob: f64,
    /// log p(first token | prompt).
    pub first_token_log_prob: f64,
}

/// Scores of a set of label continuations after one prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelScores {
    /// One entry per continuation, in the order given.
    pub labels: Vec<LabelScore>,
    /// Probability of the next token NOT being the first token of any label.
    pub first_token_mass_outside: f64,
}

/// The log-probability of one prompt token given the tokens before it, and the most likely
/// tokens at its position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogProb {
    /// The token.
    pub token_id: u32,
    /// log p(token | earlier tokens), natural log; `None` for the first token (nothing before it).
    pub log_prob: Option<f64>,
    /// 1 + the number of tokens more likely at this position (0 for the first token).
    pub rank: usize,
    /// The most likely tokens at this position with their log-probabilities, most likely
    /// first (empty for the first token).
    pub top: Vec<(u32, f64)>,
}

/// Log-probabilities of every token of one prompt, and of the token that would follow it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptLogProbs {
    /// One entry per prompt token.
    pub tokens: Vec<TokenLogProb>,
    /// The most likely next tokens after the whole prompt, most likely first (at least one:
    /// the greedy choice).
    pub next: Vec<(u32, f64)>,
}

/// Why free generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced an end-of-sequence / end-of-turn token (not included in the output).
    Eos,
    /// The token budget was used up.
    MaxTokens,
    /// The context window is full.
    ContextFull,
}

/// The result of free greedy generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// Decoded text of `token_ids`.
    pub text: String,
    /// Generated tokens (without the final end-of-sequence token).
    pub token_ids: Vec<u32>,
    /// Why generation stopped.
    pub stop_reason: StopReason,
}

/// The numbers a constrained dict holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NumberScale {
    /// Probabilities from 0 to 1 with at most `max_fraction_digits` decimals.
    #[default]
    Fraction,
    /// Whole percentages from 0 to 100.
    Percent,
}

/// Settings of constrained verbalized generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConstrainedOptions {
    /// Most digits after the decimal point (at least 1; the fraction scale).
    pub max_fraction_digits: usize,
    /// Probabilities or percentages.
    #[serde(default)]
    pub scale: NumberScale,
}

/// Temperature sampling with a seeded generator: each token is drawn from
/// softmax(log p / `temperature`) by a ChaCha8 generator seeded with `seed` on `stream`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// τ > 0.
    pub temperature: f64,
    /// Seed of the generator.
    pub seed: u64,
    /// Stream of the generator (independent samples of one seed).
    pub stream: u64,
}

/// One generated number of a constrained dict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratedNumber {
    /// The label it belongs to.
    pub label: String,
    /// The number as written.
    pub text: String,
    /// Its value, in [0, 1] (on the percent scale, in [0, 100]).
    pub value: f64,
    /// The tokens the model chose for it.
    pub token_ids: Vec<u32>,
    /// Σ raw (unmasked) log-probabilities of those tokens.
    pub log_prob: f64,
    /// Σ log-probabilities renormalised over the allowed tokens at each step, including the
    /// final choice of ending the number.
    pub masked_log_prob: f64,
}

/// The result of constrained verbalized generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConstrainedGeneration {
    /// The whole dict as text, e.g. `{"positive": 0.9, "negative": 0.1}`.
    pub text: String,
    /// One number per label, in label order.
    pub numbers: Vec<GeneratedNumber>,
}

/// A model the run engine can collect both signals from.
pub trait ModelBackend {
    /// A processed prompt (for a local model: its KV cache and next-token logits).
    type Prefix: PromptState;

    /// Who the model is, for the manifest.
    fn identity(&self) -> &ModelIdentity;

    /// What the backend can do.
    fn capabilities(&self) -> Capabilities;

    /// How many prompts of up to `positions` tokens (prompt and answer) to keep in flight at
    /// once: as many as fit the backend's memory, at most what batching still gains. The
    /// default is 1 (no batching).
    fn suggested_batch(&self, positions: usize) -> usize {
        let _ = positions;
        1
    }

    /// The context window in tokens.
    fn context_length(&self) -> usize {
        self.identity().context_length
    }

    /// `user_message` as one user turn of the model's chat template, with the template's
    /// generation prompt appended (the text the model sees before its answer).
    fn chat_prompt(&self, user_message: &str) -> Result<String>;

    /// Whether the model has a chat template of its own ([`ModelBackend::chat_prompt`] falls
    /// back to plain `user:` / `assistant:` lines otherwise).
    fn has_chat_template(&self) -> bool;

    /// The tokens of `text` as the model sees them in a prompt (special tokens matched,
    /// nothing added).
    fn encode(&self, text: &str) -> Result<Vec<u32>>;

    /// The tokens that end a generation (end of sequence, end of turn).
    fn stop_tokens(&self) -> Vec<u32> {
        Vec::new()
    }

    /// The text of `ids` (special tokens written out), the inverse of
    /// [`ModelBackend::encode`] for ids it produced.
    fn decode(&self, ids: &[u32]) -> Result<String>;

    /// The tokens of a whole prompt `text`: [`ModelBackend::encode`], with the model's BOS in
    /// front when it expects one and the text does not start with it already (chat templates
    /// often write it; base models' plain prompts do not).
    fn encode_prompt(&self, text: &str) -> Result<Vec<u32>>;

    /// Processes `tokens` from an empty context.
    fn prefill(&self, tokens: &[u32]) -> Result<Self::Prefix>;

    /// Processes `tokens` on top of `prefix` (which is left as it is).
    fn extend(&self, prefix: &Self::Prefix, tokens: &[u32]) -> Result<Self::Prefix>;

    /// The log-probability of each continuation after `prefix` (total over its tokens and of
    /// its first token) and the next-token mass outside their first tokens.
    fn score_labels(&self, prefix: &Self::Prefix, continuations: &[String]) -> Result<LabelScores>;

    /// [`ModelBackend::score_labels`] after each of `prefixes`, in order. A backend that can
    /// score several prompts at once (a server with requests in flight) overrides this; the
    /// default scores them one after another.
    fn score_labels_batch(&self, prefixes: &[&Self::Prefix], continuations: &[String]) -> Result<Vec<LabelScores>> {
        prefixes.iter().map(|prefix| self.score_labels(prefix, continuations)).collect()
    }

    /// The log-probability of every token of each of `prompts` given the tokens before it
    /// (what an inference server calls prompt log-probs), with the `top` most likely tokens at
    /// each position and after the prompt. `prefix_chunks` (may be empty) gives the lengths of
    /// the chunks in which a client processed the prompts' shared prefix, so a backend can
    /// process it the same way and give that client's numbers exactly. Backends that cannot
    /// compute them say so.
    fn prompt_log_probs(&self, prompts: &[Vec<u32>], top: usize, prefix_chunks: &[usize]) -> Result<Vec<PromptLogProbs>> {
        let _ = (prompts, top, prefix_chunks);
        Err(BackendError::Unsupported("prompt log-probabilities".into()))
    }

    /// Greedy generation of at most `max_tokens` tokens after `prefix`.
    fn generate(&self, prefix: &Self::Prefix, max_tokens: usize) -> Result<Generation>;

    /// [`ModelBackend::generate`] after each of `prefixes`, in order (the default: one after
    /// another).
    fn generate_batch(&self, prefixes: &[&Self::Prefix], max_tokens: usize) -> Result<Vec<Generation>> {
        prefixes.iter().map(|prefix| self.generate(prefix, max_tokens)).collect()
    }

    /// [`ModelBackend::generate`] after each of `prefixes` with every token sampled under the
    /// matching `samplings` entry. Backends without seeded sampling say so.
    fn generate_sampled_batch(&self, prefixes: &[&Self::Prefix], max_tokens: usize, samplings: &[Sampling]) -> Result<Vec<Generation>> {
        let _ = (prefixes, max_tokens, samplings);
        Err(BackendError::Unsupported("seeded sampled generation".into()))
    }

    /// [`ModelBackend::generate_constrained_batch`] with each dict's numbers sampled under the
    /// matching `samplings` entry. Backends without seeded sampling say so.
    fn generate_constrained_sampled_batch(
        &self,
        prefixes: &[&Self::Prefix],
        labels: &[String],
        options: &ConstrainedOptions,
        samplings: &[Sampling],
    ) -> Result<Vec<ConstrainedGeneration>> {
        let _ = (prefixes, labels, options, samplings);
        Err(BackendError::Unsupported("seeded sampled constrained generation".into()))
    }

    /// The dict `{"<label>": <number>, ...}` after `prefix` with the skeleton forced and only the
    /// numbers generated, greedily, under the number grammar of `options`.
    fn generate_constrained(
        &self,
        prefix: &Self::Prefix,
        labels: &[String],
        options: &ConstrainedOptions,
    ) -> Result<ConstrainedGeneration>;

    /// [`ModelBackend::generate_constrained`] after each of `prefixes`, in order. A backend that
    /// can advance several dicts in one batched forward overrides this (the results must equal
    /// one-at-a-time generation); the default generates them one after another.
    fn generate_constrained_batch(
        &self,
        prefixes: &[&Self::Prefix],
        labels: &[String],
        options: &ConstrainedOptions,
    ) -> Result<Vec<ConstrainedGeneration>> {
        prefixes.iter().map(|prefix| self.generate_constrained(prefix, labels, options)).collect()
    }
}
