//! Candor's calibration core: everything that turns per-example label scores into calibrated
//! probabilities and into numbers about them, with no model in sight.
//!
//! Scores travel as a [`ScoreMatrix`] (one row per example, one column per label) together with
//! gold labels as class indices. The modules follow the flow of an experiment: [`verbalized`] turns
//! model text into distributions, [`softmax`] holds the stable primitives (including the
//! invert-softmax trick), [`calibrators`] fit and apply calibration maps, [`metrics`] measure
//! calibration and accuracy, [`bootstrap`] puts confidence intervals on every metric (and
//! [`refit`] intervals that include the variance of fitting the calibrator),
//! [`reliability`] and [`thresholds`] produce the data behind diagrams and decision thresholds,
//! [`diagnostics`] says whether a signal is degenerate, and [`sweep`] shows what ε does.

// Input never panics the library: no unwrap/expect outside tests (errors name what was wrong).
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod bootstrap;
pub mod calibrators;
pub mod diagnostics;
pub mod error;
pub mod matrix;
pub mod metrics;
pub mod refit;
pub mod reliability;
pub mod softmax;
pub mod split;
pub mod sweep;
pub mod thresholds;
pub mod verbalized;

pub use calibrators::{fit, kinds_for, CalibratorKind, FitOptions, FitStatus, FittedCalibrator, InputKind};
pub use error::{CalibError, Result};
pub use matrix::ScoreMatrix;
pub use verbalized::{average_distributions, ParseStatus, VerbalizedDistribution, VerbalizedParser};

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod test_support;
