//! The error type of candor-experiment. Messages name the file, line, example or setting at
//! fault; errors of the crates below (dataset, backend, numerics, JSON documents) pass through
//! unchanged, and any failure can carry a context saying what was being done (e.g. which
//! example, which calibrator).

use std::fmt::Display;

/// Result of candor-experiment operations.
pub type Result<T, E = ExperimentError> = std::result::Result<T, E>;

/// Why a run, a calibration or an evaluation could not be done.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// Settings, records or input are not what was expected; the message says where and what.
    #[error("{0}")]
    Invalid(String),
    /// The dataset could not be loaded.
    #[error(transparent)]
    Data(#[from] candor_data::DataError),
    /// The model backend failed.
    #[error(transparent)]
    Backend(#[from] candor_backend::BackendError),
    /// A calibrator, metric or parser refused its input.
    #[error(transparent)]
    Calib(#[from] candor_calib::CalibError),
    /// A run-directory JSON document could not be read or written.
    #[error(transparent)]
    JsonFile(#[from] candor_results::JsonFileError),
    /// A JSON value could not be converted.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A failure while doing `context`.
    #[error("{context}")]
    Failed {
        /// What was being done, e.g. `example 'test-3'`.
        context: String,
        /// The failure.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Adds what was being done to a failure, turning it into an [`ExperimentError::Failed`].
pub(crate) trait Context<T> {
    /// Wraps the error under `context`.
    fn context(self, context: impl Display) -> Result<T>;
    /// Wraps the error under the context `make` returns (only called on error).
    fn with_context<C: Display>(self, make: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl Display) -> Result<T> {
        self.map_err(|source| ExperimentError::Failed { context: context.to_string(), source: Box::new(source) })
    }

    fn with_context<C: Display>(self, make: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|source| ExperimentError::Failed { context: make().to_string(), source: Box::new(source) })
    }
}

/// Returns early with [`ExperimentError::Invalid`] built from a format string.
macro_rules! bail {
    ($($message:tt)*) => {
        return Err($crate::error::ExperimentError::Invalid(format!($($message)*)))
    };
}

/// Returns early with [`ExperimentError::Invalid`] unless the condition holds.
macro_rules! ensure {
    ($condition:expr, $($message:tt)*) => {
        if !$condition {
            $crate::error::bail!($($message)*);
        }
    };
}

/// [`ExperimentError::Invalid`] from a format string, for `ok_or_else` and `map_err`.
macro_rules! invalid {
    ($($message:tt)*) => {
        $crate::error::ExperimentError::Invalid(format!($($message)*))
    };
}

pub(crate) use {bail, ensure, invalid};
