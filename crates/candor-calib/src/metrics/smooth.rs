//! Smooth ECE (Błasiok & Nakkiran 2023, "Smooth ECE: Principled Reliability Diagrams via Kernel
//! Smoothing"), discretised like the authors' reference package `relplot`.
//!
//! For a bandwidth σ, the residuals `r_i = f_i − y_i` (score minus outcome) and the unit masses
//! are smoothed with a Gaussian kernel of standard deviation σ reflected at 0 and 1; smECE_σ is
//! `Σ_t |r̂(t)| / Σ_t d̂(t)` over evaluation points `t`, i.e. the density-weighted mean absolute
//! smoothed residual. The reported smECE uses the bandwidth σ* at which smECE_σ = σ.
//!
//! Discretisation (as in `relplot`): masses are spread onto a grid of
//! `M = ⌊max(2000, round(20/σ))/2⌋ + 1` equally spaced points on `[0, 1]` by linear
//! interpolation; the kernel is evaluated at grid offsets up to 1/2 (it is truncated there); the
//! smoothed grid values are linearly interpolated at `T = max(200, round(10/σ))` equally spaced
//! points. Two deliberate differences from `relplot`: (1) reflection follows the continuous
//! definition, so a grid node on the boundary is its own mirror image and counts twice
//! (`relplot`'s padding counts it once, halving the mirrored mass of scores at exactly 0 or 1,
//! which are common); (2) the kernel is always centred on a grid node, and the `1e-4` density
//! regulariser is omitted, so the value does not depend on how the weights are scaled.
//! The convolution is computed with an FFT.
//!
//! Bandwidth search (as in `relplot`): σ = 1 if smECE_1 > 1; otherwise bisection on `[0, 1]`
//! with 10 halvings for the predicate `σ < 0.001 or σ < smECE_σ`, keeping the smallest σ found
//! where it fails; σ* is then within 2⁻¹⁰ above the fixed point.

use crate::error::{CalibError, Result};
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;

/// Bandwidths below this are accepted by the bandwidth search without evaluation.
pub const SMOOTH_ECE_MIN_BANDWIDTH: f64 = 0.001;
const SEARCH_HALVINGS: usize = 10;
const MIN_GRID_POINTS: f64 = 2000.0;
const GRID_POINTS_PER_INVERSE_SIGMA: f64 = 20.0;
const MIN_EVALUATION_POINTS: f64 = 200.0;
const EVALUATION_POINTS_PER_INVERSE_SIGMA: f64 = 10.0;

/// A smooth ECE value and the bandwidth it was computed at.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SmoothEce {
    /// smECE at `bandwidth`.
    pub value: f64,
    /// The automatic bandwidth σ*.
    pub bandwidth: f64,
}

/// Smooth ECE of scores in `[0, 1]` against binary outcomes, with the automatic bandwidth.
///
/// For top-label calibration pass the confidences and whether each prediction was correct.
pub fn smooth_ece(scores: &[f64], outcomes: &[bool]) -> Result<SmoothEce> {
    let data = SmoothEceData::checked(scores, outcomes)?;
    let counts = vec![1; scores.len()];
    Ok(data.smooth_ece(&counts, &all_rows(scores.len()), &mut SmoothEceWorkspace::default()))
}

/// smECE_σ of scores in `[0, 1]` against binary outcomes at a fixed bandwidth σ in `(0, 1]`.
pub fn smooth_ece_at_bandwidth(scores: &[f64], outcomes: &[bool], bandwidth: f64) -> Result<f64> {
    if !(bandwidth > 0.0 && bandwidth <= 1.0) {
        return Err(CalibError::InvalidParameter {
            name: "bandwidth",
            reason: format!("must be in (0, 1], got {bandwidth}"),
        });
    }
    let data = SmoothEceData::checked(scores, outcomes)?;
    let counts = vec![1; scores.len()];
    let mut workspace = SmoothEceWorkspace::default();
    workspace.spectra.clear();
    data.load_weights(&counts, &all_rows(scores.len()), &mut workspace);
    Ok(data.at_bandwidth(bandwidth, &mut workspace))
}

/// The indices `0..n`, as the list of rows of non-zero weight when every weight is 1.
fn all_rows(n: usize) -> Vec<u32> {
    (0..n).map(|i| i as u32).collect()
}

/// Scores and residuals of the rows (ascending scores are fastest), ready for weighted
/// smooth-ECE evaluation.
#[derive(Debug, Default)]
pub(crate) struct SmoothEceData {
    scores: Vec<f64>,
    residuals: Vec<f64>,
}

/// FFT plans, cached kernel spectra and per-weighting caches (one per thread).
pub(crate) struct SmoothEceWorkspace {
    planner: FftPlanner<f64>,
    /// Real spectra of the circular kernel, by (σ bits, grid size).
    kernels: HashMap<(u64, usize), Vec<f64>>,
    /// Spectra of the packed (residual, mass) grids of the current weighting, by grid size.
    spectra: Vec<(usize, Vec<Complex<f64>>)>,
    /// smECE_σ of the current weighting, by σ.
    values: Vec<(f64, f64)>,
    /// `(score, weight·(residual, 1))` of the rows of non-zero weight of the current weighting,
    /// in row order.
    weighted: Vec<(f64, Complex<f64>)>,
    buffer: Vec<Complex<f64>>,
    /// FFT scratch space.
    scratch: Vec<Complex<f64>>,
}

impl Default for SmoothEceWorkspace {
    fn default() -> Self {
        Self {
            planner: FftPlanner::new(),
            kernels: HashMap::new(),
            spectra: Vec::new(),
            values: Vec::new(),
            weighted: Vec::new(),
            buffer: Vec::new(),
            scratch: Vec::new(),
        }
    }
}

impl fmt::Debug for SmoothEceWorkspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmoothEceWorkspace")
            .field("cached_kernels", &self.kernels.len())
            .finish_non_exhaustive()
    }
}

impl SmoothEceData {
    /// Data from scores and 0/1 outcomes (as `f64`).
    pub(crate) fn new(scores: &[f64], outcomes: &[f64]) -> Self {
        Self {
            scores: scores.to_vec(),
            residuals: scores.iter().zip(outcomes).map(|(f, y)| f - y).collect(),
        }
    }

    fn checked(scores: &[f64], outcomes: &[bool]) -> Result<Self> {
        if scores.is_empty() {
            return Err(CalibError::Empty("smooth ECE needs at least one score".into()));
        }
        if scores.len() != outcomes.len() {
            return Err(CalibError::Shape {
                what: "outcomes (one per score)".into(),
                expected: scores.len(),
                found: outcomes.len(),
            });
        }
        if let Some(row) = scores.iter().position(|s| !(0.0..=1.0).contains(s)) {
            return Err(CalibError::InvalidValue {
                row,
                column: 0,
                value: scores[row],
                expected: "a score in [0, 1]",
            });
        }
        let outcomes: Vec<f64> = outcomes.iter().map(|&y| f64::from(u8::from(y))).collect();
        Ok(Self::new(scores, &outcomes))
    }

    /// smECE with the automatic bandwidth for row weights `counts` (not all zero);
    /// `weighted_rows` lists the rows whose weight is non-zero, ascending.
    pub(crate) fn smooth_ece(
        &self,
        counts: &[u32],
        weighted_rows: &[u32],
        workspace: &mut SmoothEceWorkspace,
    ) -> SmoothEce {
        workspace.spectra.clear();
        workspace.values.clear();
        self.load_weights(counts, weighted_rows, workspace);
        let too_narrow = |sigma: f64, workspace: &mut SmoothEceWorkspace| {
            sigma < SMOOTH_ECE_MIN_BANDWIDTH || sigma < self.memoised(sigma, workspace)
        };
        let bandwidth = if too_narrow(1.0, workspace) {
            1.0
        } else {
            let (mut failing, mut passing) = (1.0, 0.0);
            for _ in 0..SEARCH_HALVINGS {
                let mid = (failing + passing) / 2.0;
                if too_narrow(mid, workspace) {
                    passing = mid;
                } else {
                    failing = mid;
                }
            }
            failing
        };
        SmoothEce {
            value: self.memoised(bandwidth, workspace),
            bandwidth,
        }
    }

    /// Gathers the scores and weighted masses of the rows of non-zero weight, once per
    /// weighting (every grid size of the bandwidth search spreads them).
    fn load_weights(&self, counts: &[u32], weighted_rows: &[u32], workspace: &mut SmoothEceWorkspace) {
        workspace.weighted.clear();
        workspace.weighted.extend(weighted_rows.iter().map(|&row| {
            let row = row as usize;
            (self.scores[row], Complex::new(self.residuals[row], 1.0) * f64::from(counts[row]))
        }));
    }

    fn memoised(&self, sigma: f64, workspace: &mut SmoothEceWorkspace) -> f64 {
        if let Some(&(_, value)) = workspace.values.iter().find(|(s, _)| *s == sigma) {
            return value;
        }
        let value = self.at_bandwidth(sigma, workspace);
        workspace.values.push((sigma, value));
        value
    }

    /// smECE_σ for the weighting loaded by [`Self::load_weights`].
    fn at_bandwidth(&self, sigma: f64, workspace: &mut SmoothEceWorkspace) -> f64 {
        let grid = grid_points(sigma);
        let fft_len = fft_len(grid);
        if !workspace.spectra.iter().any(|(g, _)| *g == grid) {
            let spectrum = grid_spectrum(grid, fft_len, workspace);
            workspace.spectra.push((grid, spectrum));
        }
        let kernel = workspace.kernel_spectrum(sigma, grid, fft_len);
        let data = &workspace.spectra.iter().find(|(g, _)| *g == grid).expect("cached above").1;
        let mut buffer = std::mem::take(&mut workspace.buffer);
        buffer.clear();
        buffer.extend(data.iter().zip(&kernel).map(|(a, k)| a * k));
        let inverse = workspace.planner.plan_fft_inverse(fft_len);
        workspace.scratch.resize(inverse.get_inplace_scratch_len(), Complex::new(0.0, 0.0));
        inverse.process_with_scratch(&mut buffer, &mut workspace.scratch);
        // Grid node s of the smoothed signal sits at circular index s + M − 1.
        let smoothed = &buffer[grid - 1..2 * grid - 1];
        let value = interpolated_ratio(smoothed, evaluation_points(sigma));
        workspace.kernels.insert((sigma.to_bits(), grid), kernel);
        workspace.buffer = buffer;
        value
    }

}

/// FFT of the reflected grid masses of the loaded weighting, residuals in the real part and
/// unit masses in the imaginary part; index `p` holds extended grid coordinate `p − (M − 1)`.
/// Only the rows of non-zero weight are visited (the others would add zeros).
fn grid_spectrum(grid: usize, fft_len: usize, workspace: &mut SmoothEceWorkspace) -> Vec<Complex<f64>> {
    let mut masses = vec![Complex::new(0.0, 0.0); grid];
    let last_cell = grid - 2;
    let scale = (grid - 1) as f64;
    // Accumulate the current cell's two endpoint masses in registers and flush when the cell
    // changes: correct in any order, and fast for the metric engine's ascending scores.
    let (mut current, mut lower, mut upper) = (0, Complex::new(0.0, 0.0), Complex::new(0.0, 0.0));
    for &(score, mass) in &workspace.weighted {
        let position = score * scale;
        // Through u32 (positions are below the grid size): a cheaper conversion than usize.
        let cell = (position as u32 as usize).min(last_cell);
        if cell != current {
            masses[current] += lower;
            masses[current + 1] += upper;
            (current, lower, upper) = (cell, Complex::new(0.0, 0.0), Complex::new(0.0, 0.0));
        }
        let frac = position - f64::from(cell as u32);
        lower += mass * (1.0 - frac);
        upper += mass * frac;
    }
    masses[current] += lower;
    masses[current + 1] += upper;
    let edge = grid - 1;
    let mut extended = vec![Complex::new(0.0, 0.0); fft_len];
    for (p, slot) in extended.iter_mut().take(3 * edge + 1).enumerate() {
        let x = p as isize - edge as isize;
        if (0..=edge as isize).contains(&x) {
            *slot += masses[x as usize];
        }
        if x <= 0 {
            *slot += masses[(-x) as usize];
        }
        if x >= edge as isize {
            *slot += masses[(2 * edge as isize - x) as usize];
        }
    }
    let forward = workspace.planner.plan_fft_forward(fft_len);
    workspace.scratch.resize(forward.get_inplace_scratch_len(), Complex::new(0.0, 0.0));
    forward.process_with_scratch(&mut extended, &mut workspace.scratch);
    extended
}

impl SmoothEceWorkspace {
    /// The (real) spectrum of the circular, truncated Gaussian kernel; taken out of the cache
    /// (the caller puts it back) or computed.
    fn kernel_spectrum(&mut self, sigma: f64, grid: usize, fft_len: usize) -> Vec<f64> {
        if let Some(spectrum) = self.kernels.remove(&(sigma.to_bits(), grid)) {
            return spectrum;
        }
        let spacing = 1.0 / (grid - 1) as f64;
        let half_width = (grid - 1) / 2;
        let norm = 1.0 / ((2.0 * std::f64::consts::PI).sqrt() * sigma);
        let mut taps = vec![Complex::new(0.0, 0.0); fft_len];
        for j in 0..=half_width {
            let d = j as f64 * spacing;
            let value = Complex::new(norm * (-d * d / (2.0 * sigma * sigma)).exp(), 0.0);
            taps[j] = value;
            taps[(fft_len - j) % fft_len] = value;
        }
        self.planner.plan_fft_forward(fft_len).process(&mut taps);
        taps.iter().map(|c| c.re).collect()
    }
}

/// `Σ_t |r̂(t)| / Σ_t d̂(t)` with r̂, d̂ (real and imaginary parts of `smoothed`, on the grid)
/// linearly interpolated at `n_points` equally spaced points of `[0, 1]`.
fn interpolated_ratio(smoothed: &[Complex<f64>], n_points: usize) -> f64 {
    let scale = (smoothed.len() - 1) as f64;
    let last_cell = smoothed.len() - 2;
    let (mut residual_sum, mut density_sum) = (0.0, 0.0);
    for u in 0..n_points {
        let position = u as f64 / (n_points - 1) as f64 * scale;
        let cell = (position as usize).min(last_cell);
        let frac = position - cell as f64;
        let value = smoothed[cell] * (1.0 - frac) + smoothed[cell + 1] * frac;
        residual_sum += value.re.abs();
        density_sum += value.im;
    }
    residual_sum / density_sum
}

fn grid_points(sigma: f64) -> usize {
    (MIN_GRID_POINTS.max((GRID_POINTS_PER_INVERSE_SIGMA / sigma).round()) as usize) / 2 + 1
}

fn evaluation_points(sigma: f64) -> usize {
    MIN_EVALUATION_POINTS.max((EVALUATION_POINTS_PER_INVERSE_SIGMA / sigma).round()) as usize
}

/// Circular length that holds the padded grid (3M − 2 values) with no wrap-around reaching the
/// outputs: any length ≥ 2M − 1 + (M − 1)/2 works; a power of two keeps the FFT fast.
fn fft_len(grid: usize) -> usize {
    (2 * grid - 1 + (grid - 1) / 2).next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_sizes_follow_relplot() {
        assert_eq!(grid_points(0.05), 1001);
        assert_eq!(grid_points(1.0 / 512.0), 5121);
        assert_eq!(evaluation_points(0.1), 200);
        assert_eq!(evaluation_points(1.0 / 256.0), 2560);
        assert_eq!(fft_len(1001), 4096);
    }

    #[test]
    fn bad_inputs_are_rejected() {
        assert!(smooth_ece(&[], &[]).is_err());
        assert!(smooth_ece(&[0.5], &[true, false]).is_err());
        assert!(smooth_ece(&[1.5], &[true]).is_err());
        assert!(smooth_ece_at_bandwidth(&[0.5], &[true], 0.0).is_err());
    }

    #[test]
    fn constant_residual_is_recovered_exactly() {
        // Every score 0.8 with outcome 0: the residual is 0.8 everywhere mass is.
        let scores = vec![0.8; 50];
        let outcomes = vec![false; 50];
        let value = smooth_ece_at_bandwidth(&scores, &outcomes, 0.1).unwrap();
        assert!((value - 0.8).abs() < 1e-9, "{value}");
        let auto = smooth_ece(&scores, &outcomes).unwrap();
        assert!((auto.value - 0.8).abs() < 1e-9);
        // σ* is the smallest bisection point with σ ≥ smECE_σ = 0.8.
        assert!(auto.bandwidth >= 0.8 && auto.bandwidth < 0.8 + 1.0 / 1024.0, "{auto:?}");
    }
}
