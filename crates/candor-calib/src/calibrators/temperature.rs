//! Temperature scaling `softmax(z / T)`, fitted by minimising the mean NLL over `β = 1/T`.
//!
//! `NLL(β) = mean_i [ln Σ_k e^{β z_ik} − β z_iy]` is convex in β, with
//! `NLL'(β) = mean_i (E_p[z_i] − z_iy)` and `NLL''(β) = mean_i Var_p[z_i] ≥ 0` under
//! `p = softmax(β z_i)`. The fit is a safeguarded Newton iteration on `NLL' = 0`: each evaluation
//! shrinks a bracket `[β_lo, β_hi]` by the sign of the slope, and a Newton step that leaves the
//! bracket is replaced by its geometric midpoint. β is confined to `[1/max, 1/min]` of the
//! temperature bounds (default [`MIN_TEMPERATURE`], [`MAX_TEMPERATURE`]); when the optimum lies
//! beyond (separable data push `T → 0`; confidence that carries no information about the label
//! pushes `T → ∞`) the fit stops at the bound and says so in [`TemperatureParams::at_bound`].
//! When every row's logits are equal (e.g. every verbalized answer uniform), every temperature
//! gives the same NLL: T is not identifiable, reported as such with T = 1.

use super::{map_row_chunks, map_rows};
use crate::error::Result;
use crate::matrix::ScoreMatrix;
use crate::softmax::softmax_in_place;
use serde::{Deserialize, Serialize};

/// The smallest temperature the fit may return.
pub const MIN_TEMPERATURE: f64 = 0.01;
/// The largest temperature the fit may return.
pub const MAX_TEMPERATURE: f64 = 100.0;

const MAX_ITERATIONS: usize = 100;
/// Relative bracket width below which the iteration stops.
const RELATIVE_STEP_TOLERANCE: f64 = 1e-12;
/// A Newton step smaller than this (relative to β) is taken as the last one: convergence is
/// quadratic, so the error after it is of order this squared (≈ 1e-10 relative).
const FINAL_NEWTON_STEP: f64 = 1e-5;

/// The search range of the temperature, as β = 1/T.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TemperatureBounds {
    beta_min: f64,
    beta_max: f64,
}

impl TemperatureBounds {
    /// Temperatures in `[min_temperature, max_temperature]` (checked by the caller).
    pub(crate) fn new(min_temperature: f64, max_temperature: f64) -> Self {
        Self { beta_min: 1.0 / max_temperature, beta_max: 1.0 / min_temperature }
    }
}

impl Default for TemperatureBounds {
    fn default() -> Self {
        Self::new(MIN_TEMPERATURE, MAX_TEMPERATURE)
    }
}

/// A fitted temperature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemperatureParams {
    /// The temperature T of `softmax(z / T)`.
    pub temperature: f64,
    /// True when T sits on a search bound ([`Self::bounds`]) because the NLL kept decreasing
    /// beyond it: not a fit.
    pub at_bound: bool,
    /// False when every temperature gives the same NLL (every row's logits are equal): T is
    /// then 1 by convention, not a fit.
    #[serde(default = "identifiable_by_default")]
    pub identifiable: bool,
    /// The search range `[min, max]` of the temperature.
    #[serde(default = "default_bounds")]
    pub bounds: [f64; 2],
    /// Passes over the data the fit took.
    pub iterations: usize,
}

/// Results written before identifiability was recorded only held fits.
fn identifiable_by_default() -> bool {
    true
}

/// Results written before the bounds were options used the default bounds.
fn default_bounds() -> [f64; 2] {
    [MIN_TEMPERATURE, MAX_TEMPERATURE]
}

impl TemperatureParams {
    /// `softmax(z / T)` of every row.
    pub(super) fn apply(&self, z: &ScoreMatrix) -> Result<ScoreMatrix> {
        let beta = 1.0 / self.temperature;
        map_rows(z, |row| {
            row.iter_mut().for_each(|v| *v *= beta);
            softmax_in_place(row);
        })
    }
}

/// NLL, slope and curvature of the mean NLL at one β.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct NllDerivatives {
    pub nll: f64,
    pub slope: f64,
    pub curvature: f64,
}

/// Mean NLL of `softmax(β z)` and its first two derivatives in β.
pub(super) fn nll_derivatives(z: &ScoreMatrix, labels: &[usize], beta: f64) -> NllDerivatives {
    let k = z.n_classes();
    let values = z.values();
    let sums = map_row_chunks(z.n_rows(), |rows| {
        let mut acc = NllDerivatives::default();
        for i in rows {
            let row = &values[i * k..(i + 1) * k];
            let row_derivatives = row_nll_derivatives(row, labels[i], beta);
            acc.nll += row_derivatives.nll;
            acc.slope += row_derivatives.slope;
            acc.curvature += row_derivatives.curvature;
        }
        acc
    });
    let n = z.n_rows() as f64;
    let total = sums
        .iter()
        .fold(NllDerivatives::default(), |a, b| NllDerivatives {
            nll: a.nll + b.nll,
            slope: a.slope + b.slope,
            curvature: a.curvature + b.curvature,
        });
    NllDerivatives {
        nll: total.nll / n,
        slope: total.slope / n,
        curvature: total.curvature / n,
    }
}

/// Below this, a shifted logit `d = z − m` is clamped: its weight `e^{βd}` is 0 either way, and
/// the clamp keeps `d²` finite so that `0 · d²` cannot become NaN for logits near ±f64::MAX.
const SHIFT_FLOOR: f64 = -1e150;

/// One row's terms in a single pass: with logits shifted by the row maximum (`d = z − m ≤ 0`)
/// and weights `w = e^{βd}`, `E[d] = Σwd/Σw` and `Var = Σwd²/Σw − E[d]²`. The element `d = 0`
/// carries weight 1, at least `1/K` of the mass, so the subtraction loses at most a factor `K`
/// of relative precision.
fn row_nll_derivatives(row: &[f64], label: usize, beta: f64) -> NllDerivatives {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (mut total, mut first, mut second) = (0.0, 0.0, 0.0);
    for &z in row {
        let d = (z - max).max(SHIFT_FLOOR);
        let w = (beta * d).exp();
        total += w;
        first += w * d;
        second += w * d * d;
    }
    let mean = first / total;
    let gold = row[label] - max;
    NllDerivatives {
        nll: total.ln() - beta * gold,
        slope: mean - gold,
        curvature: (second / total - mean * mean).max(0.0),
    }
}

/// Data larger than this many rows first fit β on a strided subsample of about this size, and
/// start the full-data iteration there: a start within a few percent needs two or three full
/// passes instead of five or six.
const SUBSAMPLE_ROWS: usize = 4096;

/// Fits T on logits `z` (validated: finite, labels in range, at least one row) within `bounds`.
pub(super) fn fit(z: &ScoreMatrix, labels: &[usize], bounds: TemperatureBounds) -> TemperatureParams {
    let n = z.n_rows();
    let constant_rows = z.rows().all(|row| row.iter().all(|&v| v == row[0]));
    if constant_rows {
        return TemperatureParams {
            temperature: 1.0,
            at_bound: false,
            identifiable: false,
            bounds: [1.0 / bounds.beta_max, 1.0 / bounds.beta_min],
            iterations: 0,
        };
    }
    let start = if n > 4 * SUBSAMPLE_ROWS {
        let stride = n / SUBSAMPLE_ROWS;
        let rows: Vec<usize> = (0..n).step_by(stride).collect();
        let sub_labels: Vec<usize> = rows.iter().map(|&i| labels[i]).collect();
        1.0 / fit_from(&z.select_rows(&rows), &sub_labels, 1.0, bounds).temperature
    } else {
        1.0
    };
    fit_from(z, labels, start.clamp(bounds.beta_min, bounds.beta_max), bounds)
}

/// The iteration behind [`fit`], from a starting β.
///
/// The bracket starts as `[β_min, β_max]`; every evaluation moves one end of it to β by the sign
/// of the slope. A Newton step is taken when it stays inside the bracket and is less than half
/// the step before it (the `rtsafe` rule of Numerical Recipes). Otherwise, heading up towards an
/// unchecked bound, the next point is that bound (so separable data reach it in a few passes);
/// heading down, the first time, a Newton step in `ln β`, then the bound; inside a checked
/// bracket, its geometric midpoint. [`TemperatureParams::iterations`] counts passes over `z`.
fn fit_from(z: &ScoreMatrix, labels: &[usize], start: f64, bounds: TemperatureBounds) -> TemperatureParams {
    let TemperatureBounds { beta_min, beta_max } = bounds;
    let start = start.clamp(beta_min, beta_max);
    let (mut lo, mut hi) = (beta_min, beta_max);
    let (mut lo_checked, mut hi_checked) = (false, false);
    let mut beta = start;
    let mut last_step = hi - lo;
    let mut iterations = 0;
    let mut at_bound = false;
    let mut log_step_taken = false;
    while iterations < MAX_ITERATIONS {
        iterations += 1;
        let d = nll_derivatives(z, labels, beta);
        if !(d.slope.is_finite() && d.curvature.is_finite()) || d.slope == 0.0 {
            break;
        }
        if d.slope > 0.0 {
            (hi, hi_checked) = (beta, true);
        } else {
            (lo, lo_checked) = (beta, true);
        }
        if (beta == beta_max && d.slope < 0.0) || (beta == beta_min && d.slope > 0.0) {
            at_bound = true;
            break;
        }
        let step_before_last = last_step;
        let newton = beta - d.slope / d.curvature;
        let next =
            if newton > lo && newton < hi && 2.0 * (newton - beta).abs() < step_before_last.abs() {
                newton
            } else if d.slope < 0.0 && !hi_checked {
                beta_max
            } else if d.slope > 0.0 && !lo_checked && !log_step_taken {
                // Newton in u = ln β: NLL_uu = β²·NLL'' + β·NLL' > 0 since NLL' > 0 here. It
                // cannot overshoot below zero the way the plain step does when the optimum
                // temperature is above 1.
                log_step_taken = true;
                let step = -beta * d.slope / (beta * beta * d.curvature + beta * d.slope);
                (beta * step.exp()).max(beta_min)
            } else if d.slope > 0.0 && !lo_checked {
                beta_min
            } else {
                (lo * hi).sqrt()
            };
        last_step = next - beta;
        beta = next;
        let newton_converged = next == newton && last_step.abs() <= FINAL_NEWTON_STEP * beta;
        if newton_converged || hi - lo <= RELATIVE_STEP_TOLERANCE * lo {
            break;
        }
    }
    TemperatureParams {
        temperature: 1.0 / beta,
        at_bound,
        identifiable: true,
        bounds: [1.0 / beta_max, 1.0 / beta_min],
        iterations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Logits whose labels are drawn from softmax(z / t_true): the fitted T should be near t_true.
    fn sample(n: usize, k: usize, t_true: f64, seed: u64) -> (ScoreMatrix, Vec<usize>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let values: Vec<f64> = (0..n * k).map(|_| rng.random_range(-4.0..4.0)).collect();
        let z = ScoreMatrix::new(k, values).unwrap();
        let labels = crate::test_support::labels_at_temperature(&z, t_true, &mut rng);
        (z, labels)
    }

    #[test]
    fn derivatives_match_finite_differences() {
        let (z, labels) = sample(500, 5, 2.0, 1);
        let (beta, h) = (0.7, 1e-5);
        let d = nll_derivatives(&z, &labels, beta);
        let up = nll_derivatives(&z, &labels, beta + h);
        let down = nll_derivatives(&z, &labels, beta - h);
        assert!((d.slope - (up.nll - down.nll) / (2.0 * h)).abs() < 1e-7);
        assert!((d.curvature - (up.slope - down.slope) / (2.0 * h)).abs() < 1e-7);
    }

    #[test]
    fn fit_equals_brute_force_grid_minimum() {
        for (t_true, seed) in [(0.5, 2), (1.0, 3), (3.0, 4)] {
            let (z, labels) = sample(1000, 4, t_true, seed);
            let fitted = fit(&z, &labels, TemperatureBounds::default());
            assert!(!fitted.at_bound);
            // Brute force: a grid of step 1e-2 over β ∈ (0, 4], then step 2e-6 within ±1e-2 of
            // the coarse minimum (NLL is convex, so the fine window holds the true minimum).
            let nll = |b: f64| nll_derivatives(&z, &labels, b).nll;
            let argmin = |grid: Vec<f64>| {
                grid.into_iter()
                    .map(|b| (b, nll(b)))
                    .fold((0.0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a })
            };
            let (coarse, _) = argmin((1..=400).map(|i| i as f64 * 1e-2).collect());
            let (best_beta, best_nll) =
                argmin((-5_000..=5_000).map(|i| coarse + i as f64 * 2e-6).collect());
            let beta = 1.0 / fitted.temperature;
            assert!(
                (beta - best_beta).abs() <= 2e-6,
                "β {beta} vs grid {best_beta}"
            );
            assert!(nll_derivatives(&z, &labels, beta).nll <= best_nll + 1e-12);
            assert!(
                (fitted.temperature - t_true).abs() < 0.35 * t_true,
                "T {} vs {t_true}",
                fitted.temperature
            );
        }
    }

    #[test]
    fn subsample_start_reaches_the_same_optimum() {
        let (z, labels) = sample(5 * SUBSAMPLE_ROWS, 3, 1.7, 12);
        let fitted = fit(&z, &labels, TemperatureBounds::default());
        let from_one = fit_from(&z, &labels, 1.0, TemperatureBounds::default());
        assert!((fitted.temperature - from_one.temperature).abs() < 1e-10 * fitted.temperature);
        assert!(
            fitted.iterations < from_one.iterations,
            "{fitted:?} vs {from_one:?}"
        );
    }

    #[test]
    fn fitted_beta_is_a_stationary_point() {
        for (t_true, seed) in [(0.3, 5), (1.0, 6), (8.0, 7)] {
            let (z, labels) = sample(3000, 10, t_true, seed);
            let fitted = fit(&z, &labels, TemperatureBounds::default());
            let beta = 1.0 / fitted.temperature;
            let d = nll_derivatives(&z, &labels, beta);
            // The remaining Newton correction is negligible relative to β.
            assert!(
                (d.slope / d.curvature).abs() <= 1e-10 * beta,
                "T {}: {d:?}",
                fitted.temperature
            );
        }
    }

    #[test]
    fn separable_data_stop_at_the_lower_temperature_bound() {
        // Gold label always has the largest logit: NLL keeps falling as T → 0.
        let z = ScoreMatrix::from_rows(&[vec![2.0, 0.0], vec![0.0, 1.0], vec![3.0, 1.0]]).unwrap();
        let fitted = fit(&z, &[0, 1, 0], TemperatureBounds::default());
        assert!(fitted.at_bound);
        assert_eq!(fitted.temperature, MIN_TEMPERATURE);
        // Gold label always has the smallest logit: T → ∞ is best (uniform beats wrong).
        let fitted = fit(&z, &[1, 0, 1], TemperatureBounds::default());
        assert!(fitted.at_bound);
        assert_eq!(fitted.temperature, MAX_TEMPERATURE);
    }

    #[test]
    fn constant_rows_are_not_identifiable() {
        let z = ScoreMatrix::from_rows(&[vec![0.5, 0.5], vec![1.0, 1.0]]).unwrap();
        let fitted = fit(&z, &[0, 1], TemperatureBounds::default());
        assert_eq!(fitted.temperature, 1.0);
        assert!(!fitted.identifiable && !fitted.at_bound);
        // Every β gives the same NLL: ln 2 per row.
        for beta in [0.01, 1.0, 100.0] {
            assert!((nll_derivatives(&z, &[0, 1], beta).nll - 2f64.ln()).abs() < 1e-15);
        }
    }

    #[test]
    fn bounds_are_options() {
        let z = ScoreMatrix::from_rows(&[vec![2.0, 0.0], vec![0.0, 1.0], vec![3.0, 1.0]]).unwrap();
        let narrow = TemperatureBounds::new(0.5, 2.0);
        let fitted = fit(&z, &[0, 1, 0], narrow);
        assert!(fitted.at_bound && fitted.identifiable);
        assert_eq!((fitted.temperature, fitted.bounds), (0.5, [0.5, 2.0]));
        let fitted = fit(&z, &[1, 0, 1], narrow);
        assert_eq!((fitted.temperature, fitted.at_bound), (2.0, true));
    }
}
