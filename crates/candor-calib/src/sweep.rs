//! The ε sweep: how the invert-softmax ε changes the uncalibrated baseline, the fitted
//! temperature and the calibrated result of a probability signal.
//!
//! ε is the hidden hyperparameter of invert-softmax temperature scaling (arXiv 2410.06707):
//! verbalized answers hold exact zeros, `ln ε` is the logit they get, and both the fitted T and
//! the NLL of a wrong one-hot answer (`−ln ε`) move with it. For every ε the sweep fits `ts` on
//! the calibration part with that ε and measures, on the test part, `none` and `ts` under the
//! same ε (the NLL floor included), so each line is what `candor calibrate --epsilon ε` would
//! report for those two calibrators.

use crate::calibrators::{fit, CalibratorKind, CalibratorParams, FitOptions, InputKind, TemperatureParams};
use crate::error::{CalibError, Result};
use crate::matrix::ScoreMatrix;
use crate::metrics::{compute_all_with, Metric, MetricOptions};
use serde::{Deserialize, Serialize};

/// The default ε values of the sweep: the decades from 1e-8 to 1e-2.
pub const DEFAULT_SWEEP: [f64; 7] = [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2];

/// One ε of the sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// The ε.
    pub epsilon: f64,
    /// The temperature `ts` fitted with it.
    pub temperature: TemperatureParams,
    /// Test NLL of `none` (the ε-lifted answers).
    pub nll_none: f64,
    /// Test NLL of `ts`.
    pub nll_ts: f64,
    /// Test ECE (15 equal-width bins) of `none`.
    pub ece_none: f64,
    /// Test ECE of `ts`.
    pub ece_ts: f64,
}

/// Sweeps `epsilons` over probability scores: `calibration` and `test` are (scores, gold).
pub fn epsilon_sweep(
    epsilons: &[f64],
    calibration: (&ScoreMatrix, &[usize]),
    test: (&ScoreMatrix, &[usize]),
    fit_options: &FitOptions,
) -> Result<Vec<SweepPoint>> {
    epsilons
        .iter()
        .map(|&epsilon| {
            let options = FitOptions { epsilon, ..fit_options.clone() };
            let fit_kind = |kind| fit(kind, InputKind::Probabilities, calibration.0, calibration.1, &options);
            let (none, ts) = (fit_kind(CalibratorKind::None)?, fit_kind(CalibratorKind::Ts)?);
            let CalibratorParams::Temperature(temperature) = ts.parameters().clone() else {
                return Err(CalibError::NotApplicable("ts did not fit a temperature".into()));
            };
            let metrics = MetricOptions { epsilon, wanted: Some(vec![Metric::Nll, Metric::Ece15EqualWidth]) };
            let none_metrics = compute_all_with(&none.apply(test.0)?, test.1, &metrics)?;
            let ts_metrics = compute_all_with(&ts.apply(test.0)?, test.1, &metrics)?;
            Ok(SweepPoint {
                epsilon,
                temperature,
                nll_none: none_metrics.nll,
                nll_ts: ts_metrics.nll,
                ece_none: none_metrics.ece_15_equal_width,
                ece_ts: ts_metrics.ece_15_equal_width,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_at_each_epsilon_equals_a_direct_computation() {
        let calibration = ScoreMatrix::from_rows(&[
            vec![1.0, 0.0, 0.0],
            vec![0.0, 1.0, 0.0],
            vec![0.6, 0.4, 0.0],
            vec![0.2, 0.3, 0.5],
            vec![0.0, 0.0, 1.0],
            vec![0.9, 0.1, 0.0],
        ])
        .unwrap();
        let calibration_labels = [0, 0, 1, 2, 2, 0];
        let test = ScoreMatrix::from_rows(&[vec![1.0, 0.0, 0.0], vec![0.3, 0.7, 0.0], vec![0.0, 0.5, 0.5]]).unwrap();
        let test_labels = [1, 1, 0];
        let points = epsilon_sweep(
            &DEFAULT_SWEEP,
            (&calibration, &calibration_labels),
            (&test, &test_labels),
            &FitOptions::default(),
        )
        .unwrap();
        for point in &points {
            let (epsilon, t) = (point.epsilon, point.temperature.temperature);
            // Direct: z = ln max(p, ε); p̂ = softmax(z / T); NLL = mean −ln max(p̂_y, ε).
            let nll_at = |temperature: f64| {
                test.rows()
                    .zip(test_labels)
                    .map(|(row, y)| {
                        let z: Vec<f64> = row.iter().map(|p| p.max(epsilon).ln() / temperature).collect();
                        let norm: f64 = z.iter().map(|v| v.exp()).sum();
                        -(z[y].exp() / norm).max(epsilon).ln()
                    })
                    .sum::<f64>()
                    / 3.0
            };
            assert!((point.nll_none - nll_at(1.0)).abs() < 1e-12, "ε {epsilon}: {} vs {}", point.nll_none, nll_at(1.0));
            assert!((point.nll_ts - nll_at(t)).abs() < 1e-12, "ε {epsilon}");
        }
        // The one-hot wrong answer costs about −ln ε uncalibrated: the baseline moves with ε.
        assert!(points[0].nll_none > points[6].nll_none + 5.0);
    }
}
