//! The one error type of candor-calib: every fallible function returns [`Result`], and each
//! variant says which input was wrong and what was expected.

use thiserror::Error;

/// Errors raised by candor-calib.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CalibError {
    /// The number of values does not fit the declared shape.
    #[error("shape mismatch: {what}: expected {expected}, found {found}")]
    Shape {
        /// Which input was mis-shaped.
        what: String,
        /// The length or size that was expected.
        expected: usize,
        /// The length or size that was found.
        found: usize,
    },
    /// A value that must be finite (and possibly non-negative) was not.
    #[error("invalid value in row {row}, column {column}: {value} ({expected})")]
    InvalidValue {
        /// Row index of the offending value.
        row: usize,
        /// Column index of the offending value.
        column: usize,
        /// The value found.
        value: f64,
        /// What a valid value looks like.
        expected: &'static str,
    },
    /// A gold label index outside `0..n_classes`.
    #[error("label {label} in row {row} is outside 0..{n_classes}")]
    LabelOutOfRange {
        /// Row index.
        row: usize,
        /// The label index found.
        label: usize,
        /// Number of classes.
        n_classes: usize,
    },
    /// An operation that needs data received none.
    #[error("empty input: {0}")]
    Empty(String),
    /// A parameter outside its valid range.
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter {
        /// Parameter name.
        name: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// A calibrator or metric that does not apply to the given input.
    #[error("not applicable: {0}")]
    NotApplicable(String),
}

/// Result alias for candor-calib.
pub type Result<T> = std::result::Result<T, CalibError>;
