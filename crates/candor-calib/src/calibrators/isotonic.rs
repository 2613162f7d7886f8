//! One-vs-rest isotonic regression: for each class, the non-decreasing function of its probability
//! that best fits (least squares) the indicator "this row's gold label is the class", found by
//! pool-adjacent-violators (PAV).
//!
//! Equal probabilities are pooled first (they must map to one value). The fitted function is
//! stored as knots — the first and last input value of every PAV block — and evaluated by linear
//! interpolation between knots, constant beyond the first and last (the scikit-learn convention).
//! Rows are renormalised; a row whose calibrated values are all 0 keeps its input probabilities.

use super::{map_rows, renormalise_or_restore};
use crate::error::{CalibError, Result};
use crate::matrix::ScoreMatrix;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// A fitted non-decreasing map, as knots `(x[i], y[i])` with strictly increasing `x`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsotonicMap {
    /// Knot positions (input probabilities), strictly increasing.
    pub x: Vec<f64>,
    /// Knot values (calibrated probabilities), non-decreasing.
    pub y: Vec<f64>,
}

impl IsotonicMap {
    /// The map at `p`: linear between knots, constant outside them.
    pub fn eval(&self, p: f64) -> f64 {
        let (Some(&first), Some(&last)) = (self.x.first(), self.x.last()) else {
            return 0.0;
        };
        if p <= first {
            return self.y[0];
        }
        if p >= last {
            return self.y[self.y.len() - 1];
        }
        let i = self.x.partition_point(|&x| x <= p);
        let (x0, x1, y0, y1) = (self.x[i - 1], self.x[i], self.y[i - 1], self.y[i]);
        y0 + (y1 - y0) * (p - x0) / (x1 - x0)
    }
}

/// Fitted isotonic parameters: one map per class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsotonicParams {
    /// The per-class maps, in class order.
    pub maps: Vec<IsotonicMap>,
}

impl IsotonicParams {
    /// Calibrated probabilities from input probabilities with `n_classes` columns.
    pub(super) fn apply(
        &self,
        probabilities: &ScoreMatrix,
        n_classes: usize,
    ) -> Result<ScoreMatrix> {
        if self.maps.len() != n_classes {
            return Err(CalibError::Shape {
                what: "isotonic maps".into(),
                expected: n_classes,
                found: self.maps.len(),
            });
        }
        if let Some(class) = self
            .maps
            .iter()
            .position(|m| m.x.is_empty() || m.x.len() != m.y.len())
        {
            return Err(CalibError::InvalidParameter {
                name: "isotonic maps",
                reason: format!("map of class {class} has no knots or unequal x/y lengths"),
            });
        }
        map_rows(probabilities, |row| {
            let input = row.to_vec();
            for (p, map) in row.iter_mut().zip(&self.maps) {
                *p = map.eval(*p);
            }
            renormalise_or_restore(row, &input);
        })
    }
}

/// Fits one map per class on probabilities (validated, at least one row).
pub(super) fn fit(probabilities: &ScoreMatrix, labels: &[usize]) -> IsotonicParams {
    let maps = (0..probabilities.n_classes())
        .into_par_iter()
        .map(|class| {
            let x: Vec<f64> = probabilities.rows().map(|row| row[class]).collect();
            let y: Vec<f64> = labels
                .iter()
                .map(|&l| if l == class { 1.0 } else { 0.0 })
                .collect();
            fit_map(&x, &y)
        })
        .collect();
    IsotonicParams { maps }
}

/// Points `(x, mean y, weight)` sorted by `x`, with equal `x` pooled.
fn pooled_points(x: &[f64], y: &[f64]) -> Vec<(f64, f64, f64)> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut points: Vec<(f64, f64, f64)> = Vec::new();
    for i in order {
        match points.last_mut() {
            Some((px, sum, weight)) if *px == x[i] => {
                *sum += y[i];
                *weight += 1.0;
            }
            _ => points.push((x[i], y[i], 1.0)),
        }
    }
    points.iter().map(|&(x, sum, w)| (x, sum / w, w)).collect()
}

/// Weighted pool-adjacent-violators: the non-decreasing sequence minimising
/// `Σ w_i (ŷ_i − y_i)²`, for points given in order as `(y, w)` with `w > 0`.
pub(super) fn pool_adjacent_violators(points: &[(f64, f64)]) -> Vec<f64> {
    // Blocks as (weighted sum, weight, number of points).
    let mut blocks: Vec<(f64, f64, usize)> = Vec::with_capacity(points.len());
    for &(y, w) in points {
        blocks.push((w * y, w, 1));
        while blocks.len() >= 2 {
            let (s1, w1, n1) = blocks[blocks.len() - 1];
            let (s0, w0, n0) = blocks[blocks.len() - 2];
            if s0 / w0 <= s1 / w1 {
                break;
            }
            blocks.pop();
            let last = blocks.len() - 1;
            blocks[last] = (s0 + s1, w0 + w1, n0 + n1);
        }
    }
    blocks
        .iter()
        .flat_map(|&(s, w, n)| std::iter::repeat_n(s / w, n))
        .collect()
}

/// Fits one map on inputs `x` and 0/1 targets `y` (at least one point).
fn fit_map(x: &[f64], y: &[f64]) -> IsotonicMap {
    let points = pooled_points(x, y);
    let weighted: Vec<(f64, f64)> = points.iter().map(|&(_, y, w)| (y, w)).collect();
    let fitted = pool_adjacent_violators(&weighted);
    let mut map = IsotonicMap {
        x: Vec::new(),
        y: Vec::new(),
    };
    let mut start = 0;
    while start < points.len() {
        let value = fitted[start];
        let end = (start..points.len())
            .find(|&i| fitted[i] != value)
            .unwrap_or(points.len());
        map.x.push(points[start].0);
        map.y.push(value);
        if end - 1 > start {
            map.x.push(points[end - 1].0);
            map.y.push(value);
        }
        start = end;
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn weighted_mean(points: &[(f64, f64)]) -> f64 {
        points.iter().map(|(y, w)| y * w).sum::<f64>() / points.iter().map(|(_, w)| w).sum::<f64>()
    }

    /// The min–max characterisation of isotonic regression:
    /// ŷ_i = max_{j ≤ i} min_{k ≥ i} mean(y_j..=y_k), computed naively.
    fn min_max_isotonic(points: &[(f64, f64)]) -> Vec<f64> {
        let n = points.len();
        (0..n)
            .map(|i| {
                (0..=i)
                    .map(|j| {
                        (i..n)
                            .map(|k| weighted_mean(&points[j..=k]))
                            .fold(f64::INFINITY, f64::min)
                    })
                    .fold(f64::NEG_INFINITY, f64::max)
            })
            .collect()
    }

    fn squared_error(points: &[(f64, f64)], fitted: &[f64]) -> f64 {
        points
            .iter()
            .zip(fitted)
            .map(|((y, w), f)| w * (y - f).powi(2))
            .sum()
    }

    /// Brute force: the optimum is constant on contiguous blocks at the block means, so try every
    /// split into blocks and keep the monotone one with the smallest squared error.
    fn brute_force_error(points: &[(f64, f64)]) -> f64 {
        let n = points.len();
        let mut best = f64::INFINITY;
        for cuts in 0u32..(1 << (n - 1)) {
            let mut fitted = Vec::new();
            let mut start = 0;
            for end in 1..=n {
                if end == n || cuts & (1 << (end - 1)) != 0 {
                    let mean = weighted_mean(&points[start..end]);
                    fitted.extend(std::iter::repeat_n(mean, end - start));
                    start = end;
                }
            }
            if fitted.windows(2).all(|w| w[0] <= w[1] + 1e-15) {
                best = best.min(squared_error(points, &fitted));
            }
        }
        best
    }

    #[test]
    fn pav_matches_min_max_formula_and_brute_force() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for case in 0..300 {
            let n = 1 + case % 9;
            let points: Vec<(f64, f64)> = (0..n)
                .map(|_| {
                    let y = if case % 2 == 0 {
                        rng.random_range(0..2) as f64
                    } else {
                        rng.random()
                    };
                    (y, rng.random_range(1..4) as f64)
                })
                .collect();
            let fitted = pool_adjacent_violators(&points);
            assert!(
                fitted.windows(2).all(|w| w[0] <= w[1]),
                "not monotone: {fitted:?}"
            );
            let naive = min_max_isotonic(&points);
            assert!(
                fitted
                    .iter()
                    .zip(&naive)
                    .all(|(a, b)| (a - b).abs() < 1e-12),
                "{fitted:?} vs {naive:?}"
            );
            assert!((squared_error(&points, &fitted) - brute_force_error(&points)).abs() < 1e-12);
        }
    }

    #[test]
    fn ties_are_pooled_and_map_interpolates() {
        // x: 0.1 (y=0), 0.2 (y=1), 0.2 (y=0), 0.4 (y=0), 0.9 (y=1).
        // Pooled: 0.1→0, 0.2→0.5 (w 2), 0.4→0, 0.9→1. PAV merges 0.2 and 0.4: (1 + 0)/3 = 1/3.
        let map = fit_map(&[0.2, 0.9, 0.1, 0.2, 0.4], &[1.0, 1.0, 0.0, 0.0, 0.0]);
        assert_eq!(map.x, vec![0.1, 0.2, 0.4, 0.9]);
        assert_eq!(map.y, vec![0.0, 1.0 / 3.0, 1.0 / 3.0, 1.0]);
        assert_eq!(map.eval(0.0), 0.0);
        assert!((map.eval(0.15) - 1.0 / 6.0).abs() < 1e-15);
        assert_eq!(map.eval(0.3), 1.0 / 3.0);
        assert!((map.eval(0.65) - 2.0 / 3.0).abs() < 1e-15);
        assert_eq!(map.eval(1.0), 1.0);
    }

    #[test]
    fn all_zero_rows_keep_their_input() {
        // Classes 0 and 1 occur only at p = 0.8, so their maps are 0 up to 0.45; class 2 occurs
        // at 0.45 and 0.8 but not at 0.1. The row (0.45, 0.45, 0.1) evaluates to all zeros.
        let p = ScoreMatrix::from_rows(&[
            vec![0.8, 0.1, 0.1],
            vec![0.1, 0.8, 0.1],
            vec![0.1, 0.1, 0.8],
            vec![0.45, 0.1, 0.45],
            vec![0.1, 0.45, 0.45],
        ])
        .unwrap();
        let params = fit(&p, &[0, 1, 2, 2, 2]);
        assert_eq!(params.maps[0].y, vec![0.0, 0.0, 1.0]);
        let new = ScoreMatrix::from_rows(&[vec![0.1, 0.1, 0.8], vec![0.45, 0.45, 0.1]]).unwrap();
        let out = params.apply(&new, 3).unwrap();
        assert_eq!(out.row(0), &[0.0, 0.0, 1.0]);
        assert_eq!(out.row(1), &[0.45, 0.45, 0.1]);
    }
}
