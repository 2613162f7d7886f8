//! Errors of the served backend, each naming the server URL and what was expected.

/// Result of served-backend operations.
pub type Result<T, E = ServedError> = std::result::Result<T, E>;

/// Why a served model could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ServedError {
    /// The client could not be set up, or the options are wrong.
    #[error("{0}")]
    Setup(String),
    /// The server could not be reached, or kept failing, after every retry.
    #[error("{url}: no answer after {attempts} attempts (last: {last})")]
    Unavailable {
        /// The request's URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The server refused the request (a 4xx other than 429).
    #[error("{url}: HTTP {status}: {message}")]
    Refused {
        /// The request's URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The answer does not have the documented shape.
    #[error("{url}: unexpected answer: {what}")]
    Malformed {
        /// The request's URL.
        url: String,
        /// What was expected and what came.
        what: String,
    },
    /// The server cannot do what Candor needs exactly (no prompt log-probs, a chat rendering
    /// that does not survive tokenization, a self-test that disagrees).
    #[error("{0}")]
    Inexact(String),
}
