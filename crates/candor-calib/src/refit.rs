//! The refit bootstrap: confidence intervals that include the variance of fitting the
//! calibrator, not only the sampling variance of the test examples.
//!
//! The plain bootstrap ([`crate::bootstrap`]) fits a calibrator once and resamples the test
//! part, so a temperature fitted on 50 examples looks as certain as one fitted on 50 000. Here
//! every resample `b` draws the calibration part with replacement (stream
//! [`CALIBRATION_STREAM`]` | b` of the seed), re-fits the calibrator on it, applies it to the
//! test part, and measures the test resample `b` (stream `b`: the same test resamples as the
//! plain bootstrap). The point estimates are those of the fit on the whole calibration part.
//! The intervals are percentile intervals of the per-resample values; for `ts` and
//! `resoftmax_ts` the fitted temperature gets one too.

use crate::bootstrap::{
    difference, estimate, metrics_for_counts, percentile_interval, resample_counts, BootstrapOptions,
    MetricDifference, MetricEstimate,
};
use crate::calibrators::{fit, CalibratorKind, CalibratorParams, FitOptions, InputKind};
use crate::error::Result;
use crate::matrix::ScoreMatrix;
use crate::metrics::{compute_all_with, MetricOptions, MetricValues};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// The high bit of the generator stream of a calibration resample (test resamples use the
/// streams below it).
pub const CALIBRATION_STREAM: u64 = 1 << 63;

/// What the refit bootstrap measured for one calibrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefitEstimates {
    /// Every wanted metric: the point estimate of the whole-data fit with the refit interval.
    pub metrics: Vec<MetricEstimate>,
    /// Paired differences from `none` on the same test resamples (empty for `none`).
    pub versus_none: Vec<MetricDifference>,
    /// The temperature's refit interval (`ts`, `resoftmax_ts`).
    pub temperature_ci: Option<(f64, f64)>,
}

/// The data a calibrator is fitted and measured on.
#[derive(Debug, Clone, Copy)]
pub struct RefitData<'a> {
    /// What the scores are.
    pub input_kind: InputKind,
    /// Calibration scores and gold labels.
    pub calibration: (&'a ScoreMatrix, &'a [usize]),
    /// Test scores and gold labels.
    pub test: (&'a ScoreMatrix, &'a [usize]),
}

/// One resample's measurements.
struct Resampled {
    calibrated: MetricValues,
    uncalibrated: MetricValues,
    temperature: Option<f64>,
}

/// Refit-bootstrap intervals of `kind` on `data`.
pub fn refit_bootstrap(
    kind: CalibratorKind,
    data: RefitData<'_>,
    fit_options: &FitOptions,
    bootstrap: &BootstrapOptions,
    metrics: &MetricOptions,
) -> Result<RefitEstimates> {
    bootstrap.validate()?;
    let (test_scores, test_labels) = data.test;
    let fit_on = |scores: &ScoreMatrix, labels: &[usize], kind: CalibratorKind| fit(kind, data.input_kind, scores, labels, fit_options);
    let whole = fit_on(data.calibration.0, data.calibration.1, kind)?;
    let none = fit_on(data.calibration.0, data.calibration.1, CalibratorKind::None)?.apply(test_scores)?;
    let point = compute_all_with(&whole.apply(test_scores)?, test_labels, metrics)?;
    let point_none = compute_all_with(&none, test_labels, metrics)?;
    let resampled: Vec<Resampled> = (0..bootstrap.resamples as u64)
        .into_par_iter()
        .map(|b| {
            let calibration_rows = rows_of(&resample_counts(data.calibration.1.len(), bootstrap.seed, CALIBRATION_STREAM | b));
            let labels: Vec<usize> = calibration_rows.iter().map(|&i| data.calibration.1[i]).collect();
            let refitted = fit_on(&data.calibration.0.select_rows(&calibration_rows), &labels, kind)?;
            let counts = resample_counts(test_labels.len(), bootstrap.seed, b);
            Ok(Resampled {
                calibrated: metrics_for_counts(&refitted.apply(test_scores)?, test_labels, &counts, metrics)?,
                uncalibrated: metrics_for_counts(&none, test_labels, &counts, metrics)?,
                temperature: temperature_of(refitted.parameters()),
            })
        })
        .collect::<Result<_>>()?;
    let level = bootstrap.level;
    let mut temperatures: Vec<f64> = resampled.iter().filter_map(|r| r.temperature).collect();
    let wanted = metrics.metrics();
    Ok(RefitEstimates {
        metrics: wanted
            .iter()
            .map(|&metric| estimate(metric, point.get(metric), resampled.iter().map(|r| r.calibrated.get(metric)), level))
            .collect(),
        versus_none: if kind == CalibratorKind::None {
            Vec::new()
        } else {
            wanted
                .iter()
                .map(|&metric| {
                    let differences = resampled.iter().map(|r| r.calibrated.get(metric) - r.uncalibrated.get(metric));
                    difference(metric, (point.get(metric), point_none.get(metric)), differences, level)
                })
                .collect()
        },
        temperature_ci: percentile_interval(&mut temperatures, level),
    })
}

/// The row indices of a resample given by its counts, in row order.
fn rows_of(counts: &[u32]) -> Vec<usize> {
    counts.iter().enumerate().flat_map(|(i, &c)| std::iter::repeat_n(i, c as usize)).collect()
}

/// The fitted temperature of a temperature-scaling calibrator.
fn temperature_of(params: &CalibratorParams) -> Option<f64> {
    match params {
        CalibratorParams::Temperature(t) => Some(t.temperature),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Logits with labels drawn from softmax(z / t_true).
    fn sample(n: usize, k: usize, t_true: f64, rng: &mut ChaCha8Rng) -> (ScoreMatrix, Vec<usize>) {
        let z = ScoreMatrix::new(k, (0..n * k).map(|_| rng.random_range(-3.0..3.0)).collect()).unwrap();
        let labels = crate::test_support::labels_at_temperature(&z, t_true, rng);
        (z, labels)
    }

    #[test]
    fn refit_interval_of_t_covers_the_true_temperature() {
        let t_true = 2.0;
        let mut covered = 0;
        for seed in 0..50 {
            let mut rng = ChaCha8Rng::seed_from_u64(1000 + seed);
            let (calibration, calibration_labels) = sample(200, 4, t_true, &mut rng);
            let (test, test_labels) = sample(50, 4, t_true, &mut rng);
            let data = RefitData {
                input_kind: InputKind::Logits,
                calibration: (&calibration, &calibration_labels),
                test: (&test, &test_labels),
            };
            let bootstrap = BootstrapOptions { resamples: 200, seed, level: 0.95 };
            let metrics = MetricOptions { wanted: Some(vec![crate::metrics::Metric::Nll]), ..MetricOptions::default() };
            let estimates =
                refit_bootstrap(CalibratorKind::Ts, data, &FitOptions::default(), &bootstrap, &metrics).unwrap();
            let (low, high) = estimates.temperature_ci.unwrap();
            covered += usize::from(low <= t_true && t_true <= high);
        }
        assert!(covered >= 45, "covered {covered} of 50");
    }

    #[test]
    fn refit_intervals_are_wider_than_fit_once_intervals_on_a_small_calibration_part() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (calibration, calibration_labels) = sample(30, 3, 1.5, &mut rng);
        let (test, test_labels) = sample(400, 3, 1.5, &mut rng);
        let data = RefitData {
            input_kind: InputKind::Logits,
            calibration: (&calibration, &calibration_labels),
            test: (&test, &test_labels),
        };
        let bootstrap = BootstrapOptions { resamples: 300, seed: 3, level: 0.9 };
        let metrics = MetricOptions::default();
        let refit = refit_bootstrap(CalibratorKind::Ts, data, &FitOptions::default(), &bootstrap, &metrics).unwrap();
        let fitted = fit(CalibratorKind::Ts, InputKind::Logits, &calibration, &calibration_labels, &FitOptions::default())
            .unwrap();
        let once = crate::bootstrap::bootstrap_metrics(&fitted.apply(&test).unwrap(), &test_labels, &bootstrap, &metrics)
            .unwrap();
        let width = |e: &MetricEstimate| e.ci_high.unwrap() - e.ci_low.unwrap();
        let nll = |all: &[MetricEstimate]| *all.iter().find(|e| e.metric == crate::metrics::Metric::Nll).unwrap();
        assert_eq!(nll(&refit.metrics).value, nll(&once).value);
        assert!(width(&nll(&refit.metrics)) > width(&nll(&once)), "{:?} vs {:?}", nll(&refit.metrics), nll(&once));
        assert!(refit.versus_none.iter().all(|d| d.defined_resamples > 0));
    }
}
