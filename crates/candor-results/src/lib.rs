//! `calibration.json`: everything `candor calibrate` computed for a run directory, and the only
//! input of `candor report`. Written once per calibrate call (atomically, via a temporary file),
//! read back by the report renderers, so the Markdown, HTML and JSON reports always show the same
//! numbers.
//!
//! Metric keys are the public names of `candor_calib::metrics::Metric` (those of `candor eval`).
//! Numbers that are undefined (NaN, e.g. AUROC when every test row is correct) are `null`.
//! This crate holds the data model and its file I/O only: `candor-experiment` fills it,
//! `candor-report` renders it.
//!
//! ```
//! use candor_results::{CalibrationResults, CALIBRATION_FILE};
//!
//! let dir = tempfile::tempdir()?;
//! // Before `candor calibrate` ran, reading names the file and the command that writes it.
//! let missing = CalibrationResults::read(dir.path()).unwrap_err().to_string();
//! assert!(missing.contains(CALIBRATION_FILE) && missing.contains("candor calibrate --run"));
//!
//! let results: CalibrationResults = serde_json::from_value(serde_json::json!({
//!     "candor_version": "0.1.0",
//!     "run": {"dir": "runs/x", "model": "m.gguf", "architecture": "llama", "weights": "f32",
//!             "model_sha256": "00", "dataset": "emotion", "split": "test",
//!             "verbalized_mode": null, "examples": 0, "truncated": 0, "model_seconds": 0.0,
//!             "calibration_run": null},
//!     "settings": {"calib_fraction": 0.5, "seed": 0, "bootstrap_resamples": 0, "level": 0.95,
//!                  "epsilon": 1e-6, "unparseable": "uniform", "target_precisions": [0.9]},
//!     "labels": ["joy", "sadness"], "n_calibration": 0, "n_test": 0,
//!     "signals": [], "comparisons": []
//! }))?;
//! results.write(dir.path())?; // atomically, via calibration.json.tmp
//! assert_eq!(CalibrationResults::read(dir.path())?, results);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// Input never panics the library: no unwrap/expect outside tests (errors name what was wrong).
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod json_file;

pub use candor_calib::diagnostics::{SignalAgreement, SignalDiagnostics};
pub use candor_calib::sweep::SweepPoint;
pub use candor_calib::FitStatus;
use candor_calib::reliability::ReliabilityDiagram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub use json_file::JsonFileError;

/// File name of the results inside a run directory.
pub const CALIBRATION_FILE: &str = "calibration.json";

/// All results of one `candor calibrate` call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationResults {
    /// Version of the candor binary that computed them.
    pub candor_version: String,
    /// Where the records came from.
    pub run: RunSummary,
    /// How the results were computed.
    pub settings: CalibrateSettings,
    /// Label names, in column order.
    pub labels: Vec<String>,
    /// Examples in the calibration part (all signals draw on the same examples).
    pub n_calibration: usize,
    /// Examples in the test part.
    pub n_test: usize,
    /// One entry per collected signal: `verbalized` first, then `logits`.
    pub signals: Vec<SignalResults>,
    /// Paired-bootstrap differences `verbalized − logits` for each calibrator both signals have,
    /// on the test examples both signals could use (empty unless both signals were collected).
    pub comparisons: Vec<SignalComparison>,
    /// How the verbalized distribution relates to the logit one on the examples that have both
    /// (per-example rank correlation, argmax agreement); `null` unless both were collected.
    #[serde(default)]
    pub agreement: Option<SignalAgreement>,
}

/// The run the records came from (from its manifest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run directory as given.
    pub dir: String,
    /// `--model` of the run.
    pub model: String,
    /// Architecture (e.g. `llama`).
    pub architecture: String,
    /// Storage types of the weights (e.g. `q4_1 ×210, f32 ×61`).
    pub weights: String,
    /// Hex sha256 of the model file(s).
    pub model_sha256: String,
    /// Dataset name (preset or file stem).
    pub dataset: String,
    /// Dataset split of the test examples.
    pub split: String,
    /// `free` or `constrained` (`null` without the verbalized signal).
    pub verbalized_mode: Option<String>,
    /// Examples in the run.
    pub examples: usize,
    /// Examples whose text was truncated to fit the prompt.
    pub truncated: usize,
    /// Sum of the per-example wall-clock times, in seconds.
    pub model_seconds: f64,
    /// The calibration run directory when calibration examples came from a separate run
    /// (e.g. the validation split); `null` when they are a fraction of this run.
    pub calibration_run: Option<String>,
}

/// How `candor calibrate` was asked to compute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrateSettings {
    /// Fraction of each class used for calibration (`null` with a calibration run).
    pub calib_fraction: Option<f64>,
    /// Seed of the split and of every bootstrap.
    pub seed: u64,
    /// Bootstrap resamples of every interval.
    pub bootstrap_resamples: usize,
    /// Confidence level of every interval.
    pub level: f64,
    /// ε of invert softmax, of the lifted uncalibrated answers and of every NLL floor.
    pub epsilon: f64,
    /// `exclude` or `uniform`: what happens to verbalized answers that cannot be parsed.
    pub unparseable: String,
    /// Target precisions of the decision thresholds.
    pub target_precisions: Vec<f64>,
    /// The temperature's search range `[min, max]`.
    #[serde(default = "default_temperature_bounds")]
    pub temperature_bounds: [f64; 2],
    /// How the intervals were computed, in words.
    #[serde(default = "default_interval_method")]
    pub interval_method: String,
    /// The calibrators asked for (`null`: all that apply; `none` is always there).
    #[serde(default)]
    pub calibrators: Option<Vec<String>>,
    /// The metrics asked for (`null`: all).
    #[serde(default)]
    pub metrics: Option<Vec<String>>,
}

/// Results written before the bounds were options used the default bounds.
fn default_temperature_bounds() -> [f64; 2] {
    [candor_calib::calibrators::MIN_TEMPERATURE, candor_calib::calibrators::MAX_TEMPERATURE]
}

/// Results written before the method was recorded used the plain bootstrap.
fn default_interval_method() -> String {
    "percentile bootstrap over the test examples; each calibrator fitted once".into()
}

/// One signal (`verbalized` or `logits`) under every calibrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalResults {
    /// `verbalized` or `logits`.
    pub signal: String,
    /// What the calibrators were given: `probabilities` or `logits`.
    pub input_kind: String,
    /// Calibration rows this signal could use.
    pub n_calibration: usize,
    /// Test rows this signal could use.
    pub n_test: usize,
    /// Verbalized only: how the answers were read.
    pub well_formedness: Option<WellFormedness>,
    /// Logits only: mean probability of a first token that starts no label.
    pub mean_outside_mass: Option<f64>,
    /// Probability signals: what the answers look like (constant, identical, entropy) and
    /// whether the signal is degenerate; over every example the signal has.
    #[serde(default)]
    pub diagnostics: Option<SignalDiagnostics>,
    /// Probability signals: `ts` and `none` under each ε of the sweep.
    #[serde(default)]
    pub epsilon_sweep: Vec<SweepPoint>,
    /// `none` first, then every calibrator that applies to the input kind.
    pub calibrators: Vec<CalibratorResults>,
}

/// How the verbalized answers of all examples (calibration and test) were read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WellFormedness {
    /// Answers per parse status (`ok`, `renormalized`, `partial`, `unparseable`).
    pub status_counts: BTreeMap<String, usize>,
    /// Answers read.
    pub total: usize,
    /// Mean `|Σ p − 1|` of the values as written, over answers with a sum.
    pub mean_abs_sum_deviation: Option<f64>,
    /// Answers left out of every metric (`--unparseable exclude`).
    pub excluded: usize,
    /// How often each label was missing from a partial answer.
    pub missing_labels: BTreeMap<String, usize>,
}

/// One calibrator on one signal: fitted on the calibration part, measured on the test part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibratorResults {
    /// Calibrator name (`none`, `ts`, `resoftmax_ts`, ...).
    pub calibrator: String,
    /// Fitted parameters.
    pub params: serde_json::Value,
    /// Whether the parameters are a fit (`fitted`) or not (`at_lower_bound`,
    /// `at_upper_bound`, `not_identifiable`).
    #[serde(default)]
    pub fit_status: FitStatus,
    /// The temperature's refit interval (`--bootstrap-refit`).
    #[serde(default)]
    pub temperature_ci: Option<[f64; 2]>,
    /// Every metric with its bootstrap interval, keyed by metric name.
    pub metrics: BTreeMap<String, Estimate>,
    /// Paired differences `metric(this) − metric(none)`; empty for `none`.
    pub difference_vs_none: BTreeMap<String, Difference>,
    /// Top-label reliability diagram on the test part (15 equal-width bins).
    pub reliability: ReliabilityDiagram,
    /// Top-label decision thresholds, one per target precision.
    pub thresholds: Vec<ThresholdResult>,
}

/// A value with its percentile-bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The value on the test part (`null` where undefined).
    pub value: Option<f64>,
    /// The interval `[low, high]` (`null` without resamples).
    pub ci: Option<[f64; 2]>,
}

/// A paired-bootstrap difference `a − b`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    /// `a` on the rows compared.
    pub a: Option<f64>,
    /// `b` on the rows compared.
    pub b: Option<f64>,
    /// `a − b`.
    pub value: Option<f64>,
    /// Interval of `a − b`.
    pub ci: Option<[f64; 2]>,
    /// Fraction of resamples with `a − b ≤ 0`.
    pub fraction_at_most_zero: Option<f64>,
}

/// "Accept the model's top label when its confidence is ≥ threshold": the threshold is chosen on
/// the calibration part (most recall with precision ≥ target), then measured on the test part.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThresholdResult {
    /// The target precision.
    pub target_precision: f64,
    /// The chosen threshold (`null`: no threshold reaches the target on the calibration part).
    pub threshold: Option<f64>,
    /// Precision on the calibration part at the threshold.
    pub calibration_precision: Option<f64>,
    /// Recall kept on the calibration part.
    pub calibration_recall: Option<f64>,
    /// Precision on the test part, with interval.
    pub test_precision: Option<Estimate>,
    /// Recall kept on the test part, with interval.
    pub test_recall: Option<Estimate>,
}

/// `verbalized − logits` under one calibrator, paired on the same test examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalComparison {
    /// Calibrator applied to both signals.
    pub calibrator: String,
    /// Test examples both signals could use.
    pub n_test: usize,
    /// Per metric: `a` = verbalized, `b` = logits.
    pub differences: BTreeMap<String, Difference>,
}

impl CalibrationResults {
    /// Reads `dir/calibration.json`.
    pub fn read(dir: &Path) -> Result<Self, JsonFileError> {
        let path = dir.join(CALIBRATION_FILE);
        json_file::read(&path, "Candor calibration file", || {
            format!("reading {} (run `candor calibrate --run {}` first)", path.display(), dir.display())
        })
    }

    /// Writes `dir/calibration.json` through a temporary file, so a reader never sees half of it.
    pub fn write(&self, dir: &Path) -> Result<(), JsonFileError> {
        json_file::write_atomically(&dir.join(CALIBRATION_FILE), self)
    }

    /// The results of `signal` under `calibrator`, if computed.
    pub fn calibrator(&self, signal: &str, calibrator: &str) -> Option<&CalibratorResults> {
        self.signals
            .iter()
            .find(|s| s.signal == signal)?
            .calibrators
            .iter()
            .find(|c| c.calibrator == calibrator)
    }
}
