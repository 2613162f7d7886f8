//! The error type of candor-data. Every message names the file, line, row or field at fault and
//! what was expected; an underlying failure (I/O, a Parquet or CSV decoder, the hub client) is kept
//! as the source under a context that says what was being done.

use std::fmt::Display;

/// Result of candor-data operations.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Why a dataset could not be resolved, read or checked.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The request or the data is not what was expected; the message says where and what.
    #[error("{0}")]
    Invalid(String),
    /// An underlying failure, with what was being done when it happened.
    #[error("{context}")]
    Failed {
        /// What was being done (e.g. `cannot read data/x.jsonl`).
        context: String,
        /// The failure.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Adds what was being done to a failure, turning it into a [`DataError::Failed`].
pub(crate) trait Context<T> {
    /// Wraps the error under `context`.
    fn context(self, context: impl Display) -> Result<T>;
    /// Wraps the error under the context `make` returns (only called on error).
    fn with_context<C: Display>(self, make: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl Display) -> Result<T> {
        self.map_err(|source| DataError::Failed { context: context.to_string(), source: Box::new(source) })
    }

    fn with_context<C: Display>(self, make: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|source| DataError::Failed { context: make().to_string(), source: Box::new(source) })
    }
}

/// Returns early with [`DataError::Invalid`] built from a format string.
macro_rules! bail {
    ($($message:tt)*) => {
        return Err($crate::error::DataError::Invalid(format!($($message)*)))
    };
}
pub(crate) use bail;
