//! Candor's experiment engine: everything between a dataset, a model and the numbers.
//!
//! - [`run`]: prompt templates, the run engine that turns dataset examples into one record per
//!   example on any [`candor_backend::ModelBackend`] (both signals: verbalized distribution and
//!   label log-probabilities), the manifest, resumable `predictions.jsonl`, shards and merge.
//! - [`calibrate`]: a run's records → every calibrator per signal, metrics with bootstrap
//!   intervals, paired comparisons, thresholds → the `calibration.json` data model
//!   ([`candor_results::CalibrationResults`]).
//! - [`eval`]: the same measurement for probability files that came from anywhere.
//! - [`analysis`]: the options both share (ε, temperature bounds, selections, interval method,
//!   ε sweep) and the measurement of one calibrator.
//!
//! It never names an inference library: a model comes in through the backend trait. Every
//! fallible call returns an [`ExperimentError`].
//!
//! ```
//! use candor_backend::*;
//! use candor_data::DatasetRequest;
//! use candor_experiment::run::{NoProgress, RunPlan, RunSettings, Signal};
//!
//! // A stand-in model: one token per byte; every label continuation gets probability 1/256 per byte.
//! struct Bytes(ModelIdentity);
//! #[derive(Clone)]
//! struct Seen(Vec<u32>);
//! impl PromptState for Seen {
//!     fn tokens(&self) -> &[u32] { &self.0 }
//! }
//! impl ModelBackend for Bytes {
//!     type Prefix = Seen;
//!     fn identity(&self) -> &ModelIdentity { &self.0 }
//!     fn capabilities(&self) -> Capabilities {
//!         Capabilities { exact_log_probs: true, constrained_generation: false, batched_continuations: false, batched_generation: false, sampled_generation: false, constrained_percentages: false }
//!     }
//!     fn chat_prompt(&self, user: &str) -> Result<String> { Ok(format!("{user}\n")) }
//!     fn encode(&self, text: &str) -> Result<Vec<u32>> { Ok(text.bytes().map(u32::from).collect()) }
//!     fn decode(&self, ids: &[u32]) -> Result<String> { Ok(ids.iter().map(|&b| b as u8 as char).collect()) }
//!     fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> { self.encode(text) }
//!     fn has_chat_template(&self) -> bool { true }
//!     fn prefill(&self, tokens: &[u32]) -> Result<Seen> { Ok(Seen(tokens.to_vec())) }
//!     fn extend(&self, p: &Seen, tokens: &[u32]) -> Result<Seen> { Ok(Seen([p.0.as_slice(), tokens].concat())) }
//!     fn score_labels(&self, _: &Seen, labels: &[String]) -> Result<LabelScores> {
//!         let byte = -(256f64).ln();
//!         Ok(LabelScores {
//!             labels: labels.iter().map(|l| LabelScore {
//!                 label: l.clone(), token_ids: l.bytes().map(u32::from).collect(),
//!                 log_prob: byte * l.len() as f64, first_token_log_prob: byte,
//!             }).collect(),
//!             first_token_mass_outside: 0.99,
//!         })
//!     }
//!     fn generate(&self, _: &Seen, _: usize) -> Result<Generation> { Err(BackendError::Unsupported("generation".into())) }
//!     fn generate_constrained(&self, _: &Seen, _: &[String], _: &ConstrainedOptions) -> Result<ConstrainedGeneration> {
//!         Err(BackendError::Unsupported("constrained generation".into()))
//!     }
//! }
//!
//! let dir = tempfile::tempdir()?;
//! let data = dir.path().join("tiny.jsonl");
//! std::fs::write(&data, "{\"text\": \"I won!\", \"label\": \"joy\"}\n{\"text\": \"I lost.\", \"label\": \"sadness\"}\n")?;
//! let dataset = DatasetRequest { spec: data.display().to_string(), ..DatasetRequest::default() };
//! let mut settings = RunSettings::new(dataset, dir.path().join("run"));
//! settings.signals = vec![Signal::Logits];
//! let backend = Bytes(ModelIdentity { context_length: 4096, ..ModelIdentity::default() });
//! let outcome = RunPlan::new(settings)?.execute(&backend, &mut NoProgress)?;
//! assert_eq!((outcome.examples, outcome.new_records), (2, 2));
//! // Labels are scored after "Label:" as " joy" (4 bytes) and " sadness" (8 bytes).
//! let records = std::fs::read_to_string(&outcome.predictions)?;
//! let first: serde_json::Value = serde_json::from_str(records.lines().next().unwrap())?;
//! let log_probs = &first["logits"]["log_probs"];
//! assert!((log_probs[0].as_f64().unwrap() + 4.0 * (256f64).ln()).abs() < 1e-12);
//! assert!((log_probs[1].as_f64().unwrap() + 8.0 * (256f64).ln()).abs() < 1e-12);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// Input never panics the library: no unwrap/expect outside tests (errors name what was wrong).
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod analysis;
pub mod calibrate;
mod error;
pub mod eval;
pub mod run;

pub use error::{ExperimentError, Result};

#[cfg(test)]
mod fuzz;
