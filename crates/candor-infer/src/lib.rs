//! Local inference on candle for Candor: loading a model, tokenizing, rendering its chat
//! template, scoring label strings exactly and generating verbalized distributions.
//!
//! # Public API (stable)
//!
//! ```text
//! ModelSpec: FromStr ("model.gguf" | "dir/" | "hf:owner/repo[:file]")   DeviceSpec: FromStr ("cpu|cuda|cuda:N|metal")
//! LanguageModel::load(&ModelSpec, &LoadOptions) -> Result<LanguageModel>
//!   (LoadOptions::weights: None = auto | Some(WeightStorage::Dense | WeightStorage::Quantized))
//!   .tokenizer() -> &Tokenizer            (encode / decode / bos_token_id / eos_token_ids)
//!   .chat_template() -> &ChatTemplate     (render(&[ChatMessage], add_generation_prompt))
//!   .chat_prompt(user) -> Result<String>  .render_chat(..)  .encode(text) / .encode_prompt(text) (+BOS if the model adds one)
//!   .model() -> &Model                    (forward(&[u32], &mut KvCache) -> [seq, vocab] logits,
//!                                          forward_last(&[u32], &mut KvCache) -> [vocab] logits,
//!                                          forward_batch(&[Vec<u32>], &KvCache) -> Vec<[len_i, vocab]>,
//!                                          new_cache(), config(), weight_storage())
//!   .prefill(&[u32]) / .prefill_text(&str) -> Result<Prefix>      (Prefix: Clone; cache + next logits)
//!   .extend(&Prefix, &[u32]) / .extend_text(&Prefix, &str) -> Result<Prefix>
//!   .score_labels(&Prefix, &[String]) -> Result<LabelScores>
//!   .generate(&Prefix, max_tokens) -> Result<Generation>
//!   .generate_constrained(&Prefix, &[String], &ConstrainedOptions) -> Result<ConstrainedGeneration>
//! export_dense(&LanguageModel, dir)  writes model.safetensors (f32) + config.json + tokenizer files
//! ```
//!
//! Weights are dequantized to f32 at load (GGUF) or converted to f32 (safetensors); GGUF
//! weights whose f32 form does not fit in memory (or with `LoadOptions::weights` =
//! `Some(WeightStorage::Quantized)`) stay quantized and are dequantized row by row inside each
//! product. Either way activations stay f32 and the forward pass is exact to float32 rounding,
//! unlike quantized matmuls that round activations to 8 bits.
//! Every call returns a typed [`InferError`]; nothing panics on bad input.
//!
//! Threads: candle reads `RAYON_NUM_THREADS` on every parallel operation; [`LanguageModel::load`]
//! calls [`ensure_thread_count`], which sets it to the number of available cores when unset.

// Input never panics the library: no unwrap/expect outside tests (errors name what was wrong).
#![deny(clippy::unwrap_used, clippy::expect_used)]

mod attention;
mod config;
mod elementwise;
mod error;
mod generate;
mod gguf_guard;
mod hub;
mod kernels;
mod loader;
mod model;
mod quantized;
mod rope;
mod score;
mod spec;
mod template;
mod tokenizer;

pub use config::{Architecture, Llama3RopeScaling, ModelConfig, YarnRopeScaling, SUPPORTED_ARCHITECTURES};
pub use error::{InferError, Result};
pub use generate::{
    ConstrainedGeneration, ConstrainedOptions, GeneratedNumber, Generation, NumberScale, Sampling, StopReason,
};
pub use loader::{available_memory_bytes, export_dense, LanguageModel, LoadOptions};
pub use model::{KvCache, Model};
pub use kernels::kernel_build as quantized_kernel_build;
pub use quantized::WeightStorage;
pub use score::{LabelScore, LabelScores, Prefix, PromptLogProbs, PromptTokenLogProb};
pub use spec::{DeviceSpec, ModelSpec};
pub use template::{ChatMessage, ChatTemplate};
pub use tokenizer::{Tokenizer, SUPPORTED_PRE_TOKENIZERS};

/// Set `RAYON_NUM_THREADS` (read by candle and rayon) to `threads`. Call it before any
/// tensor work: rayon fixes its pool size on first use.
pub fn set_thread_count(threads: usize) {
    std::env::set_var("RAYON_NUM_THREADS", threads.max(1).to_string());
}

/// Set `RAYON_NUM_THREADS` to the number of available cores unless it is already set: unset,
/// candle re-reads `/proc/cpuinfo` on many operations, and more threads than cores make its
/// busy-waiting workers collapse decode speed.
pub fn ensure_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        set_thread_count(cores);
    }
}

#[cfg(test)]
mod fuzz;
