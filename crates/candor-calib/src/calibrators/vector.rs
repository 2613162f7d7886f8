//! Vector scaling `softmax(w ⊙ z + b)` with one weight and one bias per class, fitted by damped
//! Newton iterations on the mean NLL plus a small L2 penalty.
//!
//! The objective `mean_i [lse(w ⊙ z_i + b) − (w_y z_iy + b_y)] + λ/2 (‖w − β_TS·1‖² + ‖b‖²)`
//! is strictly convex. The penalty is anchored at the temperature-scaling solution (`w = 1/T`,
//! `b = 0`), which is also the starting point, and every accepted step decreases the objective;
//! so the fitted map never has a higher NLL on the calibration data than temperature scaling. The
//! penalty also fixes the otherwise free common shift of `b` and keeps the weights of a class that
//! never occurs finite. Each iteration builds the full `2K × 2K` Hessian (rows in parallel) and
//! solves the Newton system by Cholesky; a backtracking line search (Armijo) guards the step.

use super::{map_row_chunks, map_rows, temperature};
use crate::error::{CalibError, Result};
use crate::matrix::ScoreMatrix;
use crate::softmax::softmax_in_place;
use serde::{Deserialize, Serialize};

const MAX_ITERATIONS: usize = 100;
const MAX_HALVINGS: usize = 40;
/// Stop when half the Newton decrement `g·Δ` falls below this.
const DECREMENT_TOLERANCE: f64 = 1e-15;

/// Fitted vector-scaling parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VectorParams {
    /// Per-class weights `w`.
    pub weights: Vec<f64>,
    /// Per-class biases `b`.
    pub biases: Vec<f64>,
    /// Newton iterations taken.
    pub iterations: usize,
    /// True when the Newton decrement fell below its tolerance before the iteration cap.
    pub converged: bool,
}

impl VectorParams {
    /// `softmax(w ⊙ z + b)` of every row.
    pub(super) fn apply(&self, z: &ScoreMatrix) -> Result<ScoreMatrix> {
        let k = z.n_classes();
        for (what, found) in [
            ("vector weights", self.weights.len()),
            ("vector biases", self.biases.len()),
        ] {
            if found != k {
                return Err(CalibError::Shape {
                    what: what.into(),
                    expected: k,
                    found,
                });
            }
        }
        map_rows(z, |row| {
            for ((v, w), b) in row.iter_mut().zip(&self.weights).zip(&self.biases) {
                *v = w * *v + b;
            }
            softmax_in_place(row);
        })
    }
}

/// The regularised objective at `theta = [w; b]`.
struct Objective<'a> {
    z: &'a ScoreMatrix,
    labels: &'a [usize],
    l2: f64,
    anchor: Vec<f64>,
}

impl Objective<'_> {
    fn k(&self) -> usize {
        self.z.n_classes()
    }

    fn penalty(&self, theta: &[f64]) -> f64 {
        0.5 * self.l2
            * theta
                .iter()
                .zip(&self.anchor)
                .map(|(t, a)| (t - a).powi(2))
                .sum::<f64>()
    }

    /// Mean NLL plus penalty.
    fn value(&self, theta: &[f64]) -> f64 {
        let k = self.k();
        let values = self.z.values();
        let partial = map_row_chunks(self.z.n_rows(), |rows| {
            let mut u = vec![0.0; k];
            rows.map(|i| {
                fill_scaled(&values[i * k..(i + 1) * k], theta, &mut u);
                crate::softmax::logsumexp(&u) - u[self.labels[i]]
            })
            .sum::<f64>()
        });
        partial.iter().sum::<f64>() / self.z.n_rows() as f64 + self.penalty(theta)
    }

    /// Gradient (length 2K) and Hessian (2K × 2K, row-major) of the objective.
    fn gradient_and_hessian(&self, theta: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let k = self.k();
        let dim = 2 * k;
        let values = self.z.values();
        let partial = map_row_chunks(self.z.n_rows(), |rows| {
            let mut gradient = vec![0.0; dim];
            let mut hessian = vec![0.0; dim * dim];
            let mut p = vec![0.0; k];
            let mut v = vec![0.0; dim];
            for i in rows {
                let z = &values[i * k..(i + 1) * k];
                fill_scaled(z, theta, &mut p);
                softmax_in_place(&mut p);
                let y = self.labels[i];
                // d/du of the row NLL is p − e_y; u_c = w_c z_c + b_c.
                for c in 0..k {
                    let r = p[c] - if c == y { 1.0 } else { 0.0 };
                    gradient[c] += r * z[c];
                    gradient[k + c] += r;
                    v[c] = p[c] * z[c];
                    v[k + c] = p[c];
                    // Jᵀ diag(p) J (upper triangle): entries (w_c, w_c), (w_c, b_c), (b_c, b_c).
                    hessian[c * dim + c] += p[c] * z[c] * z[c];
                    hessian[c * dim + k + c] += p[c] * z[c];
                    hessian[(k + c) * dim + k + c] += p[c];
                }
                // Minus the rank-one part Jᵀ p pᵀ J = v vᵀ (upper triangle; mirrored below).
                for a in 0..dim {
                    let va = v[a];
                    if va == 0.0 {
                        continue;
                    }
                    let row = &mut hessian[a * dim..(a + 1) * dim];
                    for (h, vb) in row[a..].iter_mut().zip(&v[a..]) {
                        *h -= va * vb;
                    }
                }
            }
            (gradient, hessian)
        });
        let n = self.z.n_rows() as f64;
        let mut gradient = vec![0.0; dim];
        let mut hessian = vec![0.0; dim * dim];
        for (g, h) in partial {
            gradient.iter_mut().zip(g).for_each(|(a, b)| *a += b);
            hessian.iter_mut().zip(h).for_each(|(a, b)| *a += b);
        }
        for a in 0..dim {
            gradient[a] = gradient[a] / n + self.l2 * (theta[a] - self.anchor[a]);
            for b in a..dim {
                let value = hessian[a * dim + b] / n + if a == b { self.l2 } else { 0.0 };
                hessian[a * dim + b] = value;
                hessian[b * dim + a] = value;
            }
        }
        (gradient, hessian)
    }
}

/// `u = w ⊙ z + b` for `theta = [w; b]`.
fn fill_scaled(z: &[f64], theta: &[f64], u: &mut [f64]) {
    let k = z.len();
    for c in 0..k {
        u[c] = theta[c] * z[c] + theta[k + c];
    }
}

/// Fits vector scaling on logits `z` (validated) with L2 strength `l2 > 0`.
pub(super) fn fit(z: &ScoreMatrix, labels: &[usize], l2: f64) -> Result<VectorParams> {
    let k = z.n_classes();
    let beta = 1.0 / temperature::fit(z, labels, super::TemperatureBounds::default()).temperature;
    let mut theta: Vec<f64> = (0..2 * k).map(|a| if a < k { beta } else { 0.0 }).collect();
    let objective = Objective {
        z,
        labels,
        l2,
        anchor: theta.clone(),
    };
    let mut value = objective.value(&theta);
    let mut iterations = 0;
    let mut converged = false;
    while iterations < MAX_ITERATIONS {
        iterations += 1;
        let (gradient, hessian) = objective.gradient_and_hessian(&theta);
        let step = solve_positive_definite(hessian, &gradient)?;
        // Newton direction is −step; g·step ≥ 0 is twice the predicted decrease.
        let slope: f64 = gradient.iter().zip(&step).map(|(g, s)| g * s).sum();
        if !slope.is_finite() {
            break;
        }
        if slope / 2.0 <= DECREMENT_TOLERANCE {
            // At the optimum to within rounding: the full Newton step polishes the last digits.
            theta.iter_mut().zip(&step).for_each(|(th, s)| *th -= s);
            converged = true;
            break;
        }
        let mut t = 1.0;
        let mut accepted = false;
        for _ in 0..MAX_HALVINGS {
            let candidate: Vec<f64> = theta.iter().zip(&step).map(|(th, s)| th - t * s).collect();
            let candidate_value = objective.value(&candidate);
            if candidate_value <= value - 1e-4 * t * slope {
                theta = candidate;
                value = candidate_value;
                accepted = true;
                break;
            }
            t *= 0.5;
        }
        if !accepted {
            // No representable decrease along the Newton direction: at the optimum to rounding.
            converged = true;
            break;
        }
    }
    let biases = theta.split_off(k);
    Ok(VectorParams {
        weights: theta,
        biases,
        iterations,
        converged,
    })
}

/// Solves `H x = g` for symmetric positive-definite `H` (row-major, `n × n`) by Cholesky,
/// adding a tiny diagonal jitter if rounding makes a pivot non-positive.
fn solve_positive_definite(hessian: Vec<f64>, gradient: &[f64]) -> Result<Vec<f64>> {
    let n = gradient.len();
    let scale = (0..n)
        .map(|i| hessian[i * n + i].abs())
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    for jitter in [0.0, 1e-12, 1e-9, 1e-6] {
        let mut h = hessian.clone();
        (0..n).for_each(|i| h[i * n + i] += jitter * scale);
        if let Some(l) = cholesky(h, n) {
            return Ok(cholesky_solve(&l, n, gradient));
        }
    }
    Err(CalibError::NotApplicable(
        "vector scaling: the Newton system is not positive definite (scores too extreme?)".into(),
    ))
}

/// Lower-triangular `L` with `L Lᵀ = a`, or `None` when a pivot is not positive.
fn cholesky(mut a: Vec<f64>, n: usize) -> Option<Vec<f64>> {
    for j in 0..n {
        let pivot = a[j * n + j] - (0..j).map(|m| a[j * n + m].powi(2)).sum::<f64>();
        if !(pivot > 0.0 && pivot.is_finite()) {
            return None;
        }
        let diagonal = pivot.sqrt();
        a[j * n + j] = diagonal;
        for i in j + 1..n {
            let dot: f64 = (0..j).map(|m| a[i * n + m] * a[j * n + m]).sum();
            a[i * n + j] = (a[i * n + j] - dot) / diagonal;
        }
    }
    Some(a)
}

fn cholesky_solve(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; n];
    for i in 0..n {
        let dot: f64 = (0..i).map(|m| l[i * n + m] * y[m]).sum();
        y[i] = (b[i] - dot) / l[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let dot: f64 = (i + 1..n).map(|m| l[m * n + i] * x[m]).sum();
        x[i] = (y[i] - dot) / l[i * n + i];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_hand_system() {
        // [[4, 2], [2, 3]] x = [2, 1] → x = [0.5, 0].
        let x = solve_positive_definite(vec![4.0, 2.0, 2.0, 3.0], &[2.0, 1.0]).unwrap();
        assert!((x[0] - 0.5).abs() < 1e-15 && x[1].abs() < 1e-15);
    }

    #[test]
    fn gradient_and_hessian_match_finite_differences() {
        let z = ScoreMatrix::from_rows(&[
            vec![1.0, -0.5, 0.3],
            vec![0.2, 2.0, -1.0],
            vec![-1.5, 0.1, 0.7],
        ])
        .unwrap();
        let labels = [0, 1, 1];
        let objective = Objective {
            z: &z,
            labels: &labels,
            l2: 0.01,
            anchor: vec![1.0, 1.0, 1.0, 0.0, 0.0, 0.0],
        };
        let theta = vec![0.8, 1.3, 0.5, 0.1, -0.2, 0.4];
        let (g, h) = objective.gradient_and_hessian(&theta);
        let eps = 1e-6;
        for a in 0..6 {
            let shifted = |d: f64| {
                let mut t = theta.clone();
                t[a] += d;
                t
            };
            let numeric =
                (objective.value(&shifted(eps)) - objective.value(&shifted(-eps))) / (2.0 * eps);
            assert!((g[a] - numeric).abs() < 1e-8, "gradient {a}");
            let (g_up, _) = objective.gradient_and_hessian(&shifted(eps));
            let (g_down, _) = objective.gradient_and_hessian(&shifted(-eps));
            for b in 0..6 {
                let numeric = (g_up[b] - g_down[b]) / (2.0 * eps);
                assert!((h[a * 6 + b] - numeric).abs() < 1e-7, "hessian {a},{b}");
            }
        }
    }
}
