//! The error type of candor-local: loading or inspecting a local model.

use std::fmt::Display;

/// Result of candor-local operations.
pub type Result<T, E = LocalError> = std::result::Result<T, E>;

/// Why a local model could not be loaded or identified.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The inference library refused or failed (unknown architecture, bad file, ...).
    #[error(transparent)]
    Infer(#[from] candor_infer::InferError),
    /// The model's files are not what was expected; the message names the file.
    #[error("{0}")]
    Invalid(String),
    /// Reading the model's files failed while doing `context`.
    #[error("{context}")]
    Failed {
        /// What was being done, e.g. `reading GGUF metadata of m.gguf`.
        context: String,
        /// The failure.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Adds what was being done to a failure, turning it into a [`LocalError::Failed`].
pub(crate) trait Context<T> {
    /// Wraps the error under the context `make` returns (only called on error).
    fn with_context<C: Display>(self, make: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Context<T> for std::result::Result<T, E> {
    fn with_context<C: Display>(self, make: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|source| LocalError::Failed { context: make().to_string(), source: Box::new(source) })
    }
}
