//! How calibrators are fitted and measured: the options `candor eval` and `candor calibrate`
//! share, and the measurement of one calibrator on a calibration and a test part.
//!
//! One ε serves everything (invert softmax, the lifted uncalibrated baseline, every NLL), the
//! temperature's search bounds are options, `--calibrators` and `--metrics` select what is
//! computed (`none` is always measured: it is the baseline of every difference), and intervals
//! are either the percentile bootstrap over the test examples with each calibrator fitted once,
//! or (`--bootstrap-refit`) the refit bootstrap of [`candor_calib::refit`], which adds the
//! variance of fitting.

use crate::error::{bail, ensure, Context, Result};
use candor_calib::bootstrap::{bootstrap_metrics, paired_bootstrap, BootstrapOptions, MetricDifference, MetricEstimate};
use candor_calib::calibrators::{fit, kinds_for, CalibratorKind, FitOptions, FittedCalibrator, InputKind};
use candor_calib::metrics::{Metric, MetricOptions};
use candor_calib::refit::{refit_bootstrap, RefitData};
use candor_calib::ScoreMatrix;

/// The interval method of the plain bootstrap, as reports state it.
pub const FIT_ONCE_INTERVALS: &str =
    "percentile bootstrap over the test examples; each calibrator fitted once on the whole calibration part (fitting variance not included)";
/// The interval method of `--bootstrap-refit`.
pub const REFIT_INTERVALS: &str =
    "percentile bootstrap refitting each calibrator on a resample of the calibration part for every test resample (fitting variance included)";

/// The shared options (flags named in the field docs).
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisConfig {
    /// Seed of the split and of every bootstrap (`--seed`).
    pub seed: u64,
    /// Bootstrap resamples of every interval; 0: no intervals (`--bootstrap`).
    pub bootstrap: usize,
    /// Confidence level of the intervals (`--level`).
    pub level: f64,
    /// ε of invert softmax and of every NLL floor (`--epsilon`).
    pub epsilon: f64,
    /// Search range of the temperature (`--min-temperature`, `--max-temperature`).
    pub temperature_bounds: [f64; 2],
    /// Calibrators to fit besides `none`; `None`: every one that applies (`--calibrators`).
    pub calibrators: Option<Vec<CalibratorKind>>,
    /// Metrics to report; `None`: all (`--metrics`).
    pub metrics: Option<Vec<Metric>>,
    /// Refit each calibrator on every calibration resample (`--bootstrap-refit`).
    pub bootstrap_refit: bool,
    /// ε values of the sweep on probability signals; empty: no sweep (`--epsilon-sweep`).
    pub epsilon_sweep: Vec<f64>,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            bootstrap: candor_calib::bootstrap::DEFAULT_RESAMPLES,
            level: candor_calib::bootstrap::DEFAULT_LEVEL,
            epsilon: candor_calib::softmax::DEFAULT_EPSILON,
            temperature_bounds: [candor_calib::calibrators::MIN_TEMPERATURE, candor_calib::calibrators::MAX_TEMPERATURE],
            calibrators: None,
            metrics: None,
            bootstrap_refit: false,
            epsilon_sweep: candor_calib::sweep::DEFAULT_SWEEP.to_vec(),
        }
    }
}

impl AnalysisConfig {
    /// Checks the options, naming the flag that is wrong.
    pub fn check(&self) -> Result<()> {
        ensure!(self.level > 0.0 && self.level < 1.0, "--level must be in (0, 1), got {}", self.level);
        ensure!(self.epsilon > 0.0 && self.epsilon < 1.0, "--epsilon must be in (0, 1), got {}", self.epsilon);
        let [min, max] = self.temperature_bounds;
        ensure!(
            min > 0.0 && max.is_finite() && min < max,
            "--min-temperature and --max-temperature need 0 < min < max, got {min} and {max}"
        );
        if let Some(bad) = self.epsilon_sweep.iter().find(|&&e| !(e > 0.0 && e < 1.0)) {
            bail!("--epsilon-sweep values must be in (0, 1), got {bad}");
        }
        ensure!(self.metrics.as_ref().is_none_or(|m| !m.is_empty()), "--metrics needs at least one metric");
        Ok(())
    }

    /// Options of the calibrators.
    pub fn fit_options(&self) -> FitOptions {
        FitOptions {
            epsilon: self.epsilon,
            min_temperature: self.temperature_bounds[0],
            max_temperature: self.temperature_bounds[1],
            ..FitOptions::default()
        }
    }

    /// Options of the bootstrap.
    pub fn bootstrap_options(&self) -> BootstrapOptions {
        BootstrapOptions { resamples: self.bootstrap, seed: self.seed, level: self.level }
    }

    /// Options of the metrics.
    pub fn metric_options(&self) -> MetricOptions {
        MetricOptions { epsilon: self.epsilon, wanted: self.metrics.clone() }
    }

    /// The calibrators measured on scores of `input`: `none` first, then the selected ones that
    /// apply, in the canonical order.
    pub fn kinds(&self, input: InputKind) -> Vec<CalibratorKind> {
        kinds_for(input)
            .into_iter()
            .filter(|&kind| {
                kind == CalibratorKind::None || self.calibrators.as_ref().is_none_or(|chosen| chosen.contains(&kind))
            })
            .collect()
    }

    /// The interval method, as the reports state it.
    pub fn interval_method(&self) -> &'static str {
        if self.bootstrap_refit {
            REFIT_INTERVALS
        } else {
            FIT_ONCE_INTERVALS
        }
    }
}

/// A calibrator fitted on a calibration part and measured on a test part.
pub struct Measurement {
    /// The fitted calibrator (on the whole calibration part).
    pub fitted: FittedCalibrator,
    /// Calibrated probabilities of the test rows.
    pub test_probabilities: ScoreMatrix,
    /// Every wanted metric on the test rows with its interval.
    pub metrics: Vec<MetricEstimate>,
    /// Paired differences from `none` (empty for `none` itself).
    pub versus_none: Vec<MetricDifference>,
    /// The temperature's refit interval (`--bootstrap-refit`, temperature scaling only).
    pub temperature_ci: Option<(f64, f64)>,
}

/// Fits `kind` on `calibration` (scores, gold), applies it to `test`, and measures it with the
/// intervals `analysis` asks for; given the uncalibrated test probabilities (`none`'s), also the
/// paired difference from them.
pub fn fit_and_measure(
    kind: CalibratorKind,
    input_kind: InputKind,
    calibration: (&ScoreMatrix, &[usize]),
    test: (&ScoreMatrix, &[usize]),
    uncalibrated: Option<&ScoreMatrix>,
    analysis: &AnalysisConfig,
) -> Result<Measurement> {
    let fit_options = analysis.fit_options();
    let (bootstrap, metric_options) = (analysis.bootstrap_options(), analysis.metric_options());
    let fitted = fit(kind, input_kind, calibration.0, calibration.1, &fit_options)
        .with_context(|| format!("fitting {kind}"))?;
    let test_probabilities = fitted.apply(test.0).with_context(|| format!("applying {kind}"))?;
    if analysis.bootstrap_refit && kind != CalibratorKind::None {
        let data = RefitData { input_kind, calibration, test };
        let refit = refit_bootstrap(kind, data, &fit_options, &bootstrap, &metric_options)
            .with_context(|| format!("refit bootstrap of {kind}"))?;
        return Ok(Measurement {
            fitted,
            test_probabilities,
            metrics: refit.metrics,
            versus_none: refit.versus_none,
            temperature_ci: refit.temperature_ci,
        });
    }
    let metrics = bootstrap_metrics(&test_probabilities, test.1, &bootstrap, &metric_options)?;
    let versus_none = match uncalibrated {
        Some(none) if kind != CalibratorKind::None => {
            paired_bootstrap(&test_probabilities, none, test.1, &bootstrap, &metric_options)?
        }
        _ => Vec::new(),
    };
    Ok(Measurement { fitted, test_probabilities, metrics, versus_none, temperature_ci: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_is_always_measured_and_selections_keep_the_canonical_order() {
        let analysis = AnalysisConfig {
            calibrators: Some(vec![CalibratorKind::Isotonic, CalibratorKind::Ts, CalibratorKind::ResoftmaxTs]),
            ..AnalysisConfig::default()
        };
        assert_eq!(
            analysis.kinds(InputKind::Probabilities),
            [CalibratorKind::None, CalibratorKind::Ts, CalibratorKind::ResoftmaxTs, CalibratorKind::Isotonic]
        );
        assert_eq!(analysis.kinds(InputKind::Logits), [CalibratorKind::None, CalibratorKind::Ts, CalibratorKind::Isotonic]);
        assert_eq!(AnalysisConfig::default().kinds(InputKind::Logits).len(), 6);
    }
}
