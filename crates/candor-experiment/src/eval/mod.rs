//! The eval pipeline (`candor eval`): calibrate and measure probabilities that came from anywhere (an API model,
//! another tool, a previous run) — no model needed.
//!
//! The input rows are split, seeded and stratified by gold label, into a calibration part and a
//! test part. Every calibrator that applies to the input kind is fitted on the calibration part
//! and evaluated on the test part next to the uncalibrated input (`none`), with bootstrap CIs
//! for every metric and a paired bootstrap of each calibrator's difference from `none` (the
//! shared options and the measurement are those of [`crate::analysis`]). With
//! `--calib-fraction 0` only `none` is evaluated, on all rows. `--run DIR --signal
//! verbalized|logits` reads one signal of a `candor run` directory instead of a file.

mod from_run;
pub(crate) mod input;
mod prepare;
mod render;

pub use render::{json, table};

use crate::analysis::{fit_and_measure, AnalysisConfig};
use crate::error::{bail, Context, Result};
use candor_calib::bootstrap::{MetricDifference, MetricEstimate};
use candor_calib::calibrators::{CalibratorKind, FitStatus, InputKind};
use candor_calib::split::stratified_split;
use candor_calib::sweep::{epsilon_sweep, SweepPoint};
use candor_calib::ScoreMatrix;
use input::InputFile;
use prepare::{prepare, PreparedInput, ScoreKind};
pub use prepare::UnparseablePolicy;
use std::path::PathBuf;

/// What `candor eval` does: the library form of its options (flags named in the field docs).
/// Exactly one of `input` and `run` + `signal` is given.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalConfig {
    /// JSONL file: one `{"label": L, "probs"|"logits"|"text": ...}` object per line.
    pub input: Option<PathBuf>,
    /// A `candor run` directory to read instead of `--input` (labels from its manifest).
    pub run: Option<PathBuf>,
    /// Which signal of `--run` to evaluate.
    pub signal: Option<crate::run::Signal>,
    /// The label set, in order (default: the sorted labels seen in the file).
    pub labels: Option<Vec<String>>,
    /// Fraction of each class used to fit calibrators, in [0, 1); 0 evaluates the input as is.
    pub calib_fraction: f64,
    /// Seed, bootstrap, ε, temperature bounds, selections, interval method and ε sweep.
    pub analysis: AnalysisConfig,
    /// What to do with `text` rows whose distribution cannot be parsed.
    pub unparseable: UnparseablePolicy,
}

/// The outcome of one calibrator on the test part.
pub struct CalibratorResult {
    /// Which calibrator.
    pub kind: CalibratorKind,
    /// Its fitted parameters (JSON).
    pub params: serde_json::Value,
    /// Whether the parameters are a fit or sit at a bound / are not identifiable.
    pub status: FitStatus,
    /// The temperature's refit interval (`--bootstrap-refit`).
    pub temperature_ci: Option<(f64, f64)>,
    /// Every metric with its interval.
    pub metrics: Vec<MetricEstimate>,
    /// Paired differences `metric(this) − metric(none)`; empty for `none`.
    pub versus_none: Vec<MetricDifference>,
}

/// Everything `candor eval` reports.
pub struct EvalReport {
    /// Input file name.
    pub input: String,
    /// Field the input rows carry (`probs`, `logits`, `text`).
    pub input_field: &'static str,
    /// The prepared rows.
    pub data: PreparedInput,
    /// Rows in the calibration part.
    pub n_calibration: usize,
    /// Rows in the test part.
    pub n_test: usize,
    /// Split fraction as given.
    pub calib_fraction: f64,
    /// The shared options used.
    pub analysis: AnalysisConfig,
    /// Policy for unparseable text rows.
    pub unparseable: UnparseablePolicy,
    /// One entry per calibrator, `none` first.
    pub results: Vec<CalibratorResult>,
    /// The ε sweep (probability input with a calibration part and `epsilon_sweep` given).
    pub sweep: Vec<SweepPoint>,
}

/// Reads, splits, calibrates and measures what `args` names.
pub fn evaluate(args: &EvalConfig) -> Result<EvalReport> {
    let (file, labels) = match (&args.input, &args.run, args.signal) {
        (Some(input), _, _) => {
            let file = InputFile::read(input)?;
            let labels = file.label_set(args.labels.as_deref())?;
            (file, labels)
        }
        (None, Some(run), Some(signal)) => from_run::read_run(run, signal)?,
        _ => bail!("give --input FILE, or --run DIR with --signal"),
    };
    args.analysis.check()?;
    let data = prepare(&file, &labels, args.unparseable)?;
    let analysis = &args.analysis;
    let split = stratified_split(&data.gold, labels.len(), args.calib_fraction, analysis.seed)
        .context("--calib-fraction")?;
    let (calibration, test) = if split.calibration.is_empty() {
        (all_rows(&data), all_rows(&data))
    } else {
        (split.calibration.clone(), split.test.clone())
    };
    if test.is_empty() {
        bail!("the test part is empty: lower --calib-fraction (now {})", args.calib_fraction);
    }
    let input_kind = match data.kind {
        ScoreKind::Probabilities => InputKind::Probabilities,
        ScoreKind::Logits => InputKind::Logits,
    };
    let kinds = if split.calibration.is_empty() { vec![CalibratorKind::None] } else { analysis.kinds(input_kind) };
    let (calib_scores, calib_gold) = subset(&data, &calibration);
    let (test_scores, test_gold) = subset(&data, &test);

    let mut results = Vec::new();
    let mut uncalibrated: Option<ScoreMatrix> = None;
    for kind in kinds {
        let measured = fit_and_measure(
            kind,
            input_kind,
            (&calib_scores, &calib_gold),
            (&test_scores, &test_gold),
            uncalibrated.as_ref(),
            analysis,
        )?;
        results.push(CalibratorResult {
            kind,
            params: measured.fitted.params(),
            status: measured.fitted.fit_status(),
            temperature_ci: measured.temperature_ci,
            metrics: measured.metrics,
            versus_none: measured.versus_none,
        });
        if kind == CalibratorKind::None {
            uncalibrated = Some(measured.test_probabilities);
        }
    }
    let sweep = if input_kind == InputKind::Probabilities && !split.calibration.is_empty() {
        epsilon_sweep(&analysis.epsilon_sweep, (&calib_scores, &calib_gold), (&test_scores, &test_gold), &analysis.fit_options())
            .context("the ε sweep")?
    } else {
        Vec::new()
    };
    Ok(EvalReport {
        input: file.name.clone(),
        input_field: file.kind.field(),
        n_calibration: if split.calibration.is_empty() { 0 } else { calibration.len() },
        n_test: test.len(),
        data,
        calib_fraction: args.calib_fraction,
        analysis: analysis.clone(),
        unparseable: args.unparseable,
        results,
        sweep,
    })
}

fn all_rows(data: &PreparedInput) -> Vec<usize> {
    (0..data.gold.len()).collect()
}

fn subset(data: &PreparedInput, rows: &[usize]) -> (ScoreMatrix, Vec<usize>) {
    (data.scores.select_rows(rows), rows.iter().map(|&r| data.gold[r]).collect())
}
