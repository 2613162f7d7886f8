//! Platt scaling `σ(a·s + b)` on the log-odds `s` of a class, fitted by Newton's method on the
//! binary cross-entropy.
//!
//! With two classes one map is fitted on the log-odds of class 1 (`s = z₁ − z₀` on logits) and the
//! row becomes `[1 − q, q]`. With more classes one map per class is fitted one-vs-rest and each
//! row is renormalised (computed as a softmax of `ln σ(a_k s_k + b_k)`, which stays exact when
//! every `σ` underflows). With target smoothing (Platt 1999) the targets are `(N₊+1)/(N₊+2)` and
//! `1/(N₋+2)` instead of 1 and 0, which keeps `a` finite on separable data. Newton steps use the
//! exact 2 × 2 Hessian with a tiny damping term and a backtracking line search, starting from the
//! identity map `a = 1, b = 0`.

use super::map_rows;
use crate::error::{CalibError, Result};
use crate::matrix::ScoreMatrix;
use crate::softmax::softmax_in_place;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

const MAX_ITERATIONS: usize = 100;
const MAX_HALVINGS: usize = 40;
const DECREMENT_TOLERANCE: f64 = 1e-15;

/// One fitted map `q = σ(a·s + b)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlattMap {
    /// Slope on the log-odds.
    pub a: f64,
    /// Intercept.
    pub b: f64,
}

/// Fitted Platt parameters: one map for two classes (class 1), otherwise one per class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlattParams {
    /// The maps: `[class 1]` for two classes, one per class otherwise.
    pub maps: Vec<PlattMap>,
    /// Whether target smoothing was used.
    pub target_smoothing: bool,
}

impl PlattParams {
    /// Calibrated probabilities from one-vs-rest log-odds `s`.
    pub(super) fn apply(&self, log_odds: &ScoreMatrix) -> Result<ScoreMatrix> {
        let k = log_odds.n_classes();
        let expected = if k == 2 { 1 } else { k };
        if self.maps.len() != expected {
            return Err(CalibError::Shape {
                what: "Platt maps".into(),
                expected,
                found: self.maps.len(),
            });
        }
        map_rows(log_odds, |row| {
            if k == 2 {
                let f = self.maps[0].a * row[1] + self.maps[0].b;
                row.copy_from_slice(&[sigmoid(-f), sigmoid(f)]);
            } else {
                for (s, map) in row.iter_mut().zip(&self.maps) {
                    *s = -softplus(-(map.a * *s + map.b));
                }
                softmax_in_place(row);
            }
        })
    }
}

/// Fits Platt maps on one-vs-rest log-odds (validated, at least one row).
pub(super) fn fit(log_odds: &ScoreMatrix, labels: &[usize], target_smoothing: bool) -> PlattParams {
    let k = log_odds.n_classes();
    let classes: Vec<usize> = if k == 2 { vec![1] } else { (0..k).collect() };
    let maps = classes
        .par_iter()
        .map(|&class| {
            let scores: Vec<f64> = log_odds.rows().map(|row| row[class]).collect();
            let positive: Vec<bool> = labels.iter().map(|&y| y == class).collect();
            fit_binary(&scores, &positive, target_smoothing)
        })
        .collect();
    PlattParams {
        maps,
        target_smoothing,
    }
}

/// `ln(1 + e^f)` without overflow.
fn softplus(f: f64) -> f64 {
    f.max(0.0) + (-f.abs()).exp().ln_1p()
}

fn sigmoid(f: f64) -> f64 {
    if f >= 0.0 {
        1.0 / (1.0 + (-f).exp())
    } else {
        let e = f.exp();
        e / (1.0 + e)
    }
}

/// Mean cross-entropy `mean [softplus(f) − t f]`, `f = a s + b`.
fn loss(scores: &[f64], targets: &[f64], map: PlattMap) -> f64 {
    let total: f64 = scores
        .iter()
        .zip(targets)
        .map(|(&s, &t)| {
            let f = map.a * s + map.b;
            softplus(f) - t * f
        })
        .sum();
    total / scores.len() as f64
}

/// Fits one map on `scores` with `positive` marking the class (at least one score).
pub(super) fn fit_binary(scores: &[f64], positive: &[bool], target_smoothing: bool) -> PlattMap {
    let n_positive = positive.iter().filter(|&&p| p).count() as f64;
    let n_negative = positive.len() as f64 - n_positive;
    let (t_positive, t_negative) = if target_smoothing {
        (
            (n_positive + 1.0) / (n_positive + 2.0),
            1.0 / (n_negative + 2.0),
        )
    } else {
        (1.0, 0.0)
    };
    let targets: Vec<f64> = positive
        .iter()
        .map(|&p| if p { t_positive } else { t_negative })
        .collect();
    let n = scores.len() as f64;
    let mut map = PlattMap { a: 1.0, b: 0.0 };
    let mut value = loss(scores, &targets, map);
    for _ in 0..MAX_ITERATIONS {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (&s, &t) in scores.iter().zip(&targets) {
            let q = sigmoid(map.a * s + map.b);
            let w = q * (1.0 - q);
            ga += (q - t) * s;
            gb += q - t;
            haa += w * s * s;
            hab += w * s;
            hbb += w;
        }
        let (ga, gb) = (ga / n, gb / n);
        let damping = 1e-12 * (1.0 + (haa + hbb) / n);
        let (haa, hab, hbb) = (haa / n + damping, hab / n, hbb / n + damping);
        let det = haa * hbb - hab * hab;
        if !(det > 0.0 && det.is_finite()) {
            break;
        }
        // Newton step Δ = H⁻¹ g; the update is θ − tΔ.
        let (da, db) = ((hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det);
        let slope = ga * da + gb * db;
        if slope.is_nan() {
            break;
        }
        if slope / 2.0 <= DECREMENT_TOLERANCE {
            // At the optimum to within rounding: the full Newton step polishes the last digits.
            map = PlattMap {
                a: map.a - da,
                b: map.b - db,
            };
            break;
        }
        let mut t = 1.0;
        let mut accepted = false;
        for _ in 0..MAX_HALVINGS {
            let candidate = PlattMap {
                a: map.a - t * da,
                b: map.b - t * db,
            };
            let candidate_value = loss(scores, &targets, candidate);
            if candidate_value <= value - 1e-4 * t * slope {
                map = candidate;
                value = candidate_value;
                accepted = true;
                break;
            }
            t *= 0.5;
        }
        if !accepted {
            break;
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logit(p: f64) -> f64 {
        (p / (1.0 - p)).ln()
    }

    #[test]
    fn two_score_groups_are_fitted_exactly() {
        // Scores −1 (frequency of positives 1/4) and +1 (frequency 2/3): a free (a, b) can match
        // both frequencies, so σ(−a + b) = 1/4 and σ(a + b) = 2/3.
        let scores = [-1.0, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0];
        let positive = [true, false, false, false, true, true, false];
        let map = fit_binary(&scores, &positive, false);
        let (low, high) = (logit(0.25), logit(2.0 / 3.0));
        assert!((map.a - (high - low) / 2.0).abs() < 1e-9, "{map:?}");
        assert!((map.b - (high + low) / 2.0).abs() < 1e-9, "{map:?}");
    }

    #[test]
    fn smoothing_changes_targets_as_platt_defined() {
        // One constant score: only the intercept matters, and σ(a·0 + b) equals the mean target.
        let scores = [0.0; 4];
        let positive = [true, true, true, false];
        let map = fit_binary(&scores, &positive, true);
        // Targets 4/5 (three times) and 1/3: mean = (12/5 + 1/3) / 4 = 41/60.
        assert!((sigmoid(map.b) - 41.0 / 60.0).abs() < 1e-9, "{map:?}");
    }

    #[test]
    fn separable_data_stay_finite() {
        let map = fit_binary(&[-2.0, -1.0, 1.0, 2.0], &[false, false, true, true], false);
        assert!(map.a.is_finite() && map.a > 1.0 && map.b.is_finite());
    }

    #[test]
    fn stable_helpers() {
        assert_eq!(softplus(1000.0), 1000.0);
        assert!((softplus(0.0) - 2f64.ln()).abs() < 1e-15);
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert!((sigmoid(2.0) + sigmoid(-2.0) - 1.0).abs() < 1e-15);
    }
}
