//! The typed error of candor-infer: every failure names the file, field or value involved and
//! what was expected, so callers (the CLI) can print it as is.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// A model file or directory does not exist or cannot be read.
    #[error("cannot read {path}: {cause}")]
    Io {
        /// The path that could not be read.
        path: PathBuf,
        /// The underlying I/O error (shown in the message, so not chained as a source).
        cause: std::io::Error,
    },
    /// A GGUF file is malformed or truncated.
    #[error("invalid GGUF file {path}: {reason}")]
    InvalidGguf {
        /// The GGUF file.
        path: PathBuf,
        /// What was wrong (as reported by the reader).
        reason: String,
    },
    /// A required metadata key, config field or tensor is missing or has the wrong type.
    #[error("{source_name}: missing or invalid {field}: {expected}")]
    InvalidModel {
        /// The file the field was read from.
        source_name: String,
        /// The metadata key, config field or tensor name.
        field: String,
        /// What was expected there.
        expected: String,
    },
    /// The model's architecture is not implemented.
    #[error("unsupported architecture `{found}` (supported: {supported})")]
    UnsupportedArchitecture {
        /// The architecture named by the model.
        found: String,
        /// The supported architectures, comma separated.
        supported: String,
    },
    /// The tokenizer described by the model cannot be built.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template failed to parse or render.
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// A model specification string could not be parsed.
    #[error("invalid model spec `{spec}`: {reason}")]
    InvalidSpec {
        /// The spec as given.
        spec: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A device string could not be parsed or the device is not available in this build.
    #[error("device `{device}`: {reason}")]
    Device {
        /// The device as given.
        device: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A Hugging Face hub file is not available (offline cache miss or download failure).
    #[error("hub file {repo}/{file}: {reason}")]
    Hub {
        /// The repository, `owner/name`.
        repo: String,
        /// The file inside the repository.
        file: String,
        /// Why it could not be obtained.
        reason: String,
    },
    /// The tokens do not fit in the model's context window.
    #[error("sequence of {needed} tokens exceeds the context window of {context_length} tokens")]
    ContextOverflow {
        /// Position the sequence would reach (cache length + new tokens).
        needed: usize,
        /// The model's context length.
        context_length: usize,
    },
    /// The weights would not fit in the memory limit, even in the storage chosen for them
    /// (quantized GGUF weights when their f32 form does not fit).
    #[error("{source_name}: {storage} weights need {needed_bytes} bytes, more than the limit of {limit_bytes} bytes (use a smaller model, or set LoadOptions::max_dense_bytes)")]
    ModelTooLarge {
        /// The model file or directory.
        source_name: String,
        /// The weight storage the size was computed for.
        storage: crate::quantized::WeightStorage,
        /// Bytes the f32 weights would take.
        needed_bytes: u64,
        /// The limit in force.
        limit_bytes: u64,
    },
    /// An argument to an inference call is unusable (empty token list, empty label, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A tensor operation failed inside candle.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, InferError>;

impl InferError {
    pub(crate) fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            cause,
        }
    }

    pub(crate) fn invalid_model(
        source_name: impl Into<String>,
        field: impl Into<String>,
        expected: impl Into<String>,
    ) -> Self {
        Self::InvalidModel {
            source_name: source_name.into(),
            field: field.into(),
            expected: expected.into(),
        }
    }
}
