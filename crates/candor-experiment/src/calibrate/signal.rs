//! One signal under every selected calibrator: fit on the calibration examples, apply to the
//! test examples, measure the wanted metrics with bootstrap intervals, the paired difference
//! from `none`, the top-label reliability diagram and the decision thresholds for the target
//! precisions; and, for probability signals, the degeneracy diagnostics and the ε sweep.
//!
//! A threshold is chosen on the calibration part (the most recall among the thresholds whose
//! precision reaches the target) and then measured on the test part, so the reported precision
//! is what a user who set the threshold this way would see on new data.

use candor_results::{CalibratorResults, Difference, Estimate, SignalDiagnostics, SweepPoint, ThresholdResult};
use crate::analysis::{fit_and_measure, AnalysisConfig};
use crate::error::{Context, Result};
use candor_calib::bootstrap::{BootstrapOptions, MetricDifference, MetricEstimate};
use candor_calib::calibrators::{CalibratorKind, InputKind};
use candor_calib::sweep::epsilon_sweep;
use candor_calib::metrics::top_label_pairs;
use candor_calib::reliability::{top_label_reliability, ReliabilityOptions};
use candor_calib::thresholds::{bootstrap_operating_point, top_label_curve};
use candor_calib::ScoreMatrix;
use std::collections::BTreeMap;

/// The rows of one signal that calibration can use.
pub struct SignalRows {
    /// `probabilities` or `logits`.
    pub kind: InputKind,
    /// Calibration scores and gold labels.
    pub calibration: (ScoreMatrix, Vec<usize>),
    /// Test scores and gold labels.
    pub test: (ScoreMatrix, Vec<usize>),
}

/// How every signal is measured.
pub struct MeasureOptions {
    /// Seed, bootstrap, ε, bounds, selections, interval method, ε sweep.
    pub analysis: AnalysisConfig,
    /// Target precisions of the thresholds.
    pub target_precisions: Vec<f64>,
}

/// A calibrator's results and its calibrated test probabilities (kept for signal comparisons).
pub struct Measured {
    /// What goes into `calibration.json`.
    pub results: CalibratorResults,
    /// Calibrated probabilities of the test rows.
    pub test_probabilities: ScoreMatrix,
}

/// Every selected calibrator that applies to the signal's input kind, `none` first.
pub fn measure_signal(rows: &SignalRows, options: &MeasureOptions) -> Result<Vec<Measured>> {
    let mut measured: Vec<Measured> = Vec::new();
    for kind in options.analysis.kinds(rows.kind) {
        let none = measured.first().map(|m| &m.test_probabilities);
        let result = measure_calibrator(kind, rows, none, options).with_context(|| format!("calibrator {kind}"))?;
        measured.push(result);
    }
    Ok(measured)
}

fn measure_calibrator(
    kind: CalibratorKind,
    rows: &SignalRows,
    uncalibrated: Option<&ScoreMatrix>,
    options: &MeasureOptions,
) -> Result<Measured> {
    let (calibration_scores, calibration_gold) = &rows.calibration;
    let (test_scores, test_gold) = &rows.test;
    let measured = fit_and_measure(
        kind,
        rows.kind,
        (calibration_scores, calibration_gold),
        (test_scores, test_gold),
        uncalibrated,
        &options.analysis,
    )?;
    let test_probabilities = measured.test_probabilities;
    let calibration_probabilities = measured.fitted.apply(calibration_scores)?;
    let thresholds = options
        .target_precisions
        .iter()
        .map(|&target| {
            threshold_for(target, (&calibration_probabilities, calibration_gold), (&test_probabilities, test_gold), &options.analysis.bootstrap_options())
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Measured {
        results: CalibratorResults {
            calibrator: kind.name().to_string(),
            params: measured.fitted.params(),
            fit_status: measured.fitted.fit_status(),
            temperature_ci: measured.temperature_ci.map(|(low, high)| [low, high]),
            metrics: estimates(&measured.metrics),
            difference_vs_none: differences(&measured.versus_none),
            reliability: top_label_reliability(&test_probabilities, test_gold, &ReliabilityOptions::default())?,
            thresholds,
        },
        test_probabilities,
    })
}

/// The degeneracy diagnostics of a probability signal over all its rows (`None` for logits).
pub fn diagnostics(rows: &SignalRows) -> Result<Option<SignalDiagnostics>> {
    if rows.kind != InputKind::Probabilities {
        return Ok(None);
    }
    let all: Vec<&[f64]> = rows.calibration.0.rows().chain(rows.test.0.rows()).collect();
    Ok(Some(SignalDiagnostics::of(&ScoreMatrix::from_rows(&all)?)?))
}

/// The ε sweep of a probability signal (empty for logits or without ε values).
pub fn sweep(rows: &SignalRows, analysis: &AnalysisConfig) -> Result<Vec<SweepPoint>> {
    if rows.kind != InputKind::Probabilities {
        return Ok(Vec::new());
    }
    let (calibration, test) = (&rows.calibration, &rows.test);
    epsilon_sweep(&analysis.epsilon_sweep, (&calibration.0, &calibration.1), (&test.0, &test.1), &analysis.fit_options())
        .context("the ε sweep")
}

/// The threshold reaching `target` precision on the calibration part, measured on the test part.
fn threshold_for(
    target: f64,
    calibration: (&ScoreMatrix, &Vec<usize>),
    test: (&ScoreMatrix, &Vec<usize>),
    bootstrap: &BootstrapOptions,
) -> Result<ThresholdResult> {
    let chosen = top_label_curve(calibration.0, calibration.1)
        .ok()
        .and_then(|curve| curve.threshold_for_precision(target));
    let Some(point) = chosen else {
        return Ok(ThresholdResult {
            target_precision: target,
            threshold: None,
            calibration_precision: None,
            calibration_recall: None,
            test_precision: None,
            test_recall: None,
        });
    };
    let (scores, correct) = top_label_pairs(test.0, test.1)?;
    let operating = bootstrap_operating_point(&scores, &correct, point.threshold, bootstrap)?;
    let interval = |ci: Option<(f64, f64)>| ci.map(|(lo, hi)| [lo, hi]);
    Ok(ThresholdResult {
        target_precision: target,
        threshold: Some(point.threshold),
        calibration_precision: Some(point.precision),
        calibration_recall: Some(point.recall),
        test_precision: Some(Estimate { value: finite(operating.precision), ci: interval(operating.precision_ci) }),
        test_recall: Some(Estimate { value: finite(operating.recall), ci: interval(operating.recall_ci) }),
    })
}

/// Metric name → estimate.
pub fn estimates(metrics: &[MetricEstimate]) -> BTreeMap<String, Estimate> {
    metrics
        .iter()
        .map(|m| {
            let ci = m.ci_low.zip(m.ci_high).map(|(lo, hi)| [lo, hi]);
            (m.metric.name().to_string(), Estimate { value: finite(m.value), ci })
        })
        .collect()
}

/// Metric name → paired difference.
pub fn differences(metrics: &[MetricDifference]) -> BTreeMap<String, Difference> {
    metrics
        .iter()
        .map(|d| {
            let difference = Difference {
                a: finite(d.value_a),
                b: finite(d.value_b),
                value: finite(d.difference),
                ci: d.ci_low.zip(d.ci_high).map(|(lo, hi)| [lo, hi]),
                fraction_at_most_zero: d.fraction_at_most_zero,
            };
            (d.metric.name().to_string(), difference)
        })
        .collect()
}

/// `None` for NaN and infinities (JSON has no NaN).
pub fn finite(value: f64) -> Option<f64> {
    value.is_finite().then_some(value)
}
