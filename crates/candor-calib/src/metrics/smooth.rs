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
//! The convolution is computed with an FFT. Only the kernel taps that are not exactly zero in
//! floating point (the Gaussian underflows beyond about 38.6σ) are kept, and only that reach of
//! the reflected signal beyond each boundary, so that for small σ the transforms stay short; the
//! dropped taps are exactly zero, so this changes nothing but rounding.
//!
//! Bandwidth search (as in `relplot`): σ = 1 if smECE_1 > 1; otherwise bisection on `[0, 1]`
//! with 10 halvings for the predicate `σ < 0.001 or σ < smECE_σ`, keeping the smallest σ found
//! where it fails; σ* is then within 2⁻¹⁰ above the fixed point.

use super::{check_scored_outcomes, ScoreRange};
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
/// Rows summed side by side when spreading a grid cell (independent accumulators vectorise).
const LANES: usize = 8;

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
    workspace.load_weights(&data, &counts, &all_rows(scores.len()));
    Ok(workspace.at_bandwidth(bandwidth))
}

/// The indices `0..n`, as the list of rows of non-zero weight when every weight is 1.
fn all_rows(n: usize) -> Vec<u32> {
    (0..n).map(|i| i as u32).collect()
}

/// Scores (ascending) and residuals of the rows, ready for weighted smooth-ECE evaluation.
#[derive(Debug, Default)]
pub(crate) struct SmoothEceData {
    scores: Vec<f64>,
    residuals: Vec<f64>,
}

/// FFT plans, cached kernel spectra and per-weighting caches (one per thread).
pub(crate) struct SmoothEceWorkspace {
    planner: FftPlanner<f64>,
    /// Kernel spectra by (σ bits, grid size); they depend on nothing else.
    kernels: HashMap<(u64, usize), KernelSpectrum>,
    /// The rows of non-zero weight of the current weighting.
    rows: WeightedRows,
    /// Spectra of the reflected grid masses of the current weighting.
    spectra: Vec<GridSpectrum>,
    /// Buffers of spectra of earlier weightings, for reuse.
    spare: Vec<Vec<Complex<f64>>>,
    /// smECE_σ of the current weighting, by σ.
    values: Vec<(f64, f64)>,
    /// Grid masses (residual in the real part, mass in the imaginary part).
    masses: Vec<Complex<f64>>,
    buffer: Vec<Complex<f64>>,
    /// FFT scratch space.
    scratch: Vec<Complex<f64>>,
}

/// The rows of non-zero weight of a weighting in ascending score order, as columns: score,
/// weight × residual and weight.
#[derive(Debug, Default)]
struct WeightedRows {
    scores: Vec<f64>,
    residual_masses: Vec<f64>,
    masses: Vec<f64>,
}

/// The (real) spectrum of the circular, truncated Gaussian kernel of one (σ, grid size).
struct KernelSpectrum {
    /// The largest tap offset (in grid steps) whose value is not zero.
    reach: usize,
    /// The spectrum; its length is the FFT length.
    values: Vec<f64>,
}

/// The spectrum of a weighting's grid masses, reflected `reach` steps beyond each boundary.
struct GridSpectrum {
    grid: usize,
    reach: usize,
    values: Vec<Complex<f64>>,
}

impl Default for SmoothEceWorkspace {
    fn default() -> Self {
        Self {
            planner: FftPlanner::new(),
            kernels: HashMap::new(),
            rows: WeightedRows::default(),
            spectra: Vec::new(),
            spare: Vec::new(),
            values: Vec::new(),
            masses: Vec::new(),
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
    /// Data from scores in ascending order and their 0/1 outcomes (as `f64`).
    pub(crate) fn new(scores: &[f64], outcomes: &[f64]) -> Self {
        debug_assert!(scores.is_sorted(), "smooth ECE data must be in ascending score order");
        Self {
            scores: scores.to_vec(),
            residuals: scores.iter().zip(outcomes).map(|(f, y)| f - y).collect(),
        }
    }

    /// Validated data from scores in any order.
    fn checked(scores: &[f64], outcomes: &[bool]) -> Result<Self> {
        let empty = "smooth ECE needs at least one score";
        check_scored_outcomes(scores, outcomes, empty, "outcomes", ScoreRange::Probability)?;
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
        let sorted: Vec<f64> = order.iter().map(|&i| scores[i]).collect();
        let outcomes: Vec<f64> = order.iter().map(|&i| f64::from(u8::from(outcomes[i]))).collect();
        Ok(Self::new(&sorted, &outcomes))
    }

    /// smECE with the automatic bandwidth for row weights `counts` (not all zero);
    /// `weighted_rows` lists the rows whose weight is non-zero, ascending.
    pub(crate) fn smooth_ece(
        &self,
        counts: &[u32],
        weighted_rows: &[u32],
        workspace: &mut SmoothEceWorkspace,
    ) -> SmoothEce {
        workspace.load_weights(self, counts, weighted_rows);
        let mut too_narrow = |sigma: f64| sigma < SMOOTH_ECE_MIN_BANDWIDTH || sigma < workspace.memoised(sigma);
        let bandwidth = if too_narrow(1.0) {
            1.0
        } else {
            let (mut failing, mut passing) = (1.0, 0.0);
            for _ in 0..SEARCH_HALVINGS {
                let mid = (failing + passing) / 2.0;
                if too_narrow(mid) {
                    passing = mid;
                } else {
                    failing = mid;
                }
            }
            failing
        };
        SmoothEce {
            value: workspace.memoised(bandwidth),
            bandwidth,
        }
    }
}

impl SmoothEceWorkspace {
    /// Gathers the rows of non-zero weight of a weighting (once per weighting: every grid size
    /// of the bandwidth search spreads them) and forgets the previous weighting's caches.
    fn load_weights(&mut self, data: &SmoothEceData, counts: &[u32], weighted_rows: &[u32]) {
        let rows = &mut self.rows;
        rows.scores.clear();
        rows.scores.extend(weighted_rows.iter().map(|&row| data.scores[row as usize]));
        rows.residual_masses.clear();
        rows.residual_masses.extend(
            weighted_rows.iter().map(|&row| data.residuals[row as usize] * f64::from(counts[row as usize])),
        );
        rows.masses.clear();
        rows.masses.extend(weighted_rows.iter().map(|&row| f64::from(counts[row as usize])));
        self.values.clear();
        self.spare.extend(self.spectra.drain(..).map(|s| s.values));
    }

    fn memoised(&mut self, sigma: f64) -> f64 {
        if let Some(&(_, value)) = self.values.iter().find(|(s, _)| *s == sigma) {
            return value;
        }
        let value = self.at_bandwidth(sigma);
        self.values.push((sigma, value));
        value
    }

    /// smECE_σ for the weighting loaded by [`Self::load_weights`].
    fn at_bandwidth(&mut self, sigma: f64) -> f64 {
        let grid = grid_points(sigma);
        let key = (sigma.to_bits(), grid);
        if !self.kernels.contains_key(&key) {
            let kernel = kernel_spectrum(sigma, grid, &mut self.planner);
            self.kernels.insert(key, kernel);
        }
        let kernel = &self.kernels[&key];
        let reach = kernel.reach;
        let fft_len = kernel.values.len();
        let index = match self.spectra.iter().position(|s| s.grid == grid && s.reach == reach) {
            Some(index) => index,
            None => {
                let values = self.grid_spectrum(grid, reach, fft_len);
                self.spectra.push(GridSpectrum { grid, reach, values });
                self.spectra.len() - 1
            }
        };
        let kernel = &self.kernels[&key].values;
        self.buffer.clear();
        self.buffer.extend(self.spectra[index].values.iter().zip(kernel).map(|(a, k)| a * k));
        let inverse = self.planner.plan_fft_inverse(fft_len);
        self.scratch.resize(inverse.get_inplace_scratch_len(), Complex::new(0.0, 0.0));
        inverse.process_with_scratch(&mut self.buffer, &mut self.scratch);
        // Grid node s of the smoothed signal sits at circular index s + reach.
        interpolated_ratio(&self.buffer[reach..reach + grid], evaluation_points(sigma))
    }

    /// FFT (of length `fft_len`) of the loaded weighting's grid masses reflected `reach` steps
    /// beyond each boundary, residuals in the real part and masses in the imaginary part;
    /// index `p` holds grid coordinate `p − reach`.
    fn grid_spectrum(&mut self, grid: usize, reach: usize, fft_len: usize) -> Vec<Complex<f64>> {
        spread(&self.rows, grid, &mut self.masses);
        let mut extended = self.spare.pop().unwrap_or_default();
        reflect(&self.masses, reach, fft_len, &mut extended);
        let forward = self.planner.plan_fft_forward(fft_len);
        self.scratch.resize(forward.get_inplace_scratch_len(), Complex::new(0.0, 0.0));
        forward.process_with_scratch(&mut extended, &mut self.scratch);
        extended
    }
}

/// Spreads the rows' (residual, mass) onto `grid` equally spaced nodes by linear interpolation.
///
/// Rows are in ascending score order, so each grid cell's rows are contiguous: the cell's end
/// is found by galloping search and its sums are taken [`LANES`] rows at a time.
fn spread(rows: &WeightedRows, grid: usize, masses: &mut Vec<Complex<f64>>) {
    masses.clear();
    masses.resize(grid, Complex::new(0.0, 0.0));
    let scale = (grid - 1) as f64;
    let last_cell = grid - 2;
    let cell_of = |score: f64| ((score * scale) as usize).min(last_cell);
    let mut start = 0;
    while start < rows.scores.len() {
        let cell = cell_of(rows.scores[start]);
        let end = start + prefix_len(&rows.scores[start..], |score| cell_of(score) > cell);
        let range = start..end;
        let sums = cell_sums(
            &rows.scores[range.clone()],
            &rows.residual_masses[range.clone()],
            &rows.masses[range],
            scale,
            cell as f64,
        );
        masses[cell] += Complex::new(sums.residual - sums.residual_upper, sums.mass - sums.mass_upper);
        masses[cell + 1] += Complex::new(sums.residual_upper, sums.mass_upper);
        start = end;
    }
}

/// The length of the prefix of `values` in which `beyond` is false, for a `beyond` that is
/// false on the first value and monotone (false, then true): galloping, then a binary search
/// whose steps are conditional moves rather than branches (they would be mispredicted).
fn prefix_len(values: &[f64], beyond: impl Fn(f64) -> bool) -> usize {
    let (mut known, mut step) = (0, 1);
    while known + step < values.len() && !beyond(values[known + step]) {
        known += step;
        step *= 2;
    }
    // `values[known]` is not beyond; the first value that is lies in (known, known + step].
    let mut size = (known + step).min(values.len()) - known;
    while size > 1 {
        let half = size / 2;
        let probe = known + half;
        known = if beyond(values[probe]) { known } else { probe };
        size -= half;
    }
    known + 1
}

/// Sums of one grid cell's rows: residual and mass, and the shares of each that go to the
/// cell's upper node (weighted by `frac = score·scale − cell`).
struct CellSums {
    residual: f64,
    mass: f64,
    residual_upper: f64,
    mass_upper: f64,
}

fn cell_sums(scores: &[f64], residual_masses: &[f64], masses: &[f64], scale: f64, cell: f64) -> CellSums {
    let mut residual = [0.0; LANES];
    let mut mass = [0.0; LANES];
    let mut residual_upper = [0.0; LANES];
    let mut mass_upper = [0.0; LANES];
    let chunks = scores.chunks_exact(LANES).zip(residual_masses.chunks_exact(LANES)).zip(masses.chunks_exact(LANES));
    for ((s, r), m) in chunks {
        for lane in 0..LANES {
            let frac = s[lane] * scale - cell;
            residual[lane] += r[lane];
            mass[lane] += m[lane];
            residual_upper[lane] += r[lane] * frac;
            mass_upper[lane] += m[lane] * frac;
        }
    }
    let tail = scores.len() / LANES * LANES;
    for (lane, i) in (tail..scores.len()).enumerate() {
        let frac = scores[i] * scale - cell;
        residual[lane] += residual_masses[i];
        mass[lane] += masses[i];
        residual_upper[lane] += residual_masses[i] * frac;
        mass_upper[lane] += masses[i] * frac;
    }
    let total = |lanes: [f64; LANES]| lanes.iter().sum();
    CellSums {
        residual: total(residual),
        mass: total(mass),
        residual_upper: total(residual_upper),
        mass_upper: total(mass_upper),
    }
}

/// Writes the grid masses extended `reach` nodes beyond 0 and 1 by reflection into `out`
/// (index `p` holds coordinate `p − reach`; a boundary node is its own mirror image and counts
/// twice), zero-padded to `fft_len`.
fn reflect(masses: &[Complex<f64>], reach: usize, fft_len: usize, out: &mut Vec<Complex<f64>>) {
    let edge = masses.len() - 1;
    out.clear();
    out.extend((1..=reach).rev().map(|x| masses[x]));
    out.extend_from_slice(masses);
    out[reach] += masses[0];
    out[reach + edge] += masses[edge];
    out.extend((edge - reach..edge).rev().map(|x| masses[x]));
    out.resize(fft_len, Complex::new(0.0, 0.0));
}

/// The spectrum of the circular Gaussian kernel of bandwidth `sigma` on a grid of `grid`
/// nodes, truncated at offset 1/2 and at its last tap that is not zero.
fn kernel_spectrum(sigma: f64, grid: usize, planner: &mut FftPlanner<f64>) -> KernelSpectrum {
    let spacing = 1.0 / (grid - 1) as f64;
    let half_width = (grid - 1) / 2;
    let norm = 1.0 / ((2.0 * std::f64::consts::PI).sqrt() * sigma);
    let taps: Vec<f64> = (0..=half_width)
        .map(|j| {
            let d = j as f64 * spacing;
            norm * (-d * d / (2.0 * sigma * sigma)).exp()
        })
        .take_while(|&tap| tap > 0.0)
        .collect();
    let reach = taps.len().saturating_sub(1);
    let fft_len = fft_len(grid, reach);
    let mut circular = vec![Complex::new(0.0, 0.0); fft_len];
    for (j, &tap) in taps.iter().enumerate() {
        circular[j] = Complex::new(tap, 0.0);
        circular[(fft_len - j) % fft_len] = Complex::new(tap, 0.0);
    }
    planner.plan_fft_forward(fft_len).process(&mut circular);
    KernelSpectrum { reach, values: circular.iter().map(|c| c.re).collect() }
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

/// Circular length for a grid of `grid` nodes reflected `reach` nodes beyond each boundary and a
/// kernel reaching `reach` nodes: `grid + 2·reach` values, and no wrap-around reaches the outputs
/// at that length. Rounded up to the next `2^a·3^b` with `b ≤ 3`, which rustfft transforms fast.
fn fft_len(grid: usize, reach: usize) -> usize {
    let needed = grid + 2 * reach;
    [3, 9, 27].map(|odd| odd * needed.div_ceil(odd).next_power_of_two()).into_iter().fold(needed.next_power_of_two(), usize::min)
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
        assert_eq!(fft_len(1001, 500), 2048);
        assert_eq!(fft_len(2561, 386), 3456);
    }

    #[test]
    fn bad_inputs_are_rejected() {
        assert!(smooth_ece(&[], &[]).is_err());
        assert!(smooth_ece(&[0.5], &[true, false]).is_err());
        assert!(smooth_ece(&[1.5], &[true]).is_err());
        assert!(smooth_ece_at_bandwidth(&[0.5], &[true], 0.0).is_err());
    }

    /// Ascending scores with a few ties and exact 0 and 1, and outcomes drawn from them.
    fn sample(n: usize) -> (Vec<f64>, Vec<f64>) {
        let mut scores: Vec<f64> = (0..n).map(|i| ((i * 7919 % n) as f64 / n as f64).powi(2)).collect();
        scores.extend([0.0, 1.0, 1.0, 0.5, 0.5]);
        scores.sort_by(f64::total_cmp);
        let outcomes = scores.iter().enumerate().map(|(i, &f)| f64::from(u8::from((i * 31 % 97) as f64 / 97.0 < f))).collect();
        (scores, outcomes)
    }

    /// smECE_σ by the same discretisation with no FFT: rows spread onto the grid one by one,
    /// the full reflected signal, the kernel truncated at 1/2 only, a direct convolution.
    fn direct_discrete(scores: &[f64], outcomes: &[f64], sigma: f64) -> f64 {
        let grid = grid_points(sigma);
        let edge = grid - 1;
        let mut masses = vec![Complex::new(0.0, 0.0); grid];
        for (&f, &y) in scores.iter().zip(outcomes) {
            let position = f * edge as f64;
            let cell = (position as usize).min(edge - 1);
            let frac = position - cell as f64;
            masses[cell] += Complex::new(f - y, 1.0) * (1.0 - frac);
            masses[cell + 1] += Complex::new(f - y, 1.0) * frac;
        }
        let half_width = edge / 2;
        let mirrored = |x: isize| -> Complex<f64> {
            let mut value = Complex::new(0.0, 0.0);
            if (0..=edge as isize).contains(&x) {
                value += masses[x as usize];
            }
            if x <= 0 {
                value += masses[(-x) as usize];
            }
            if x >= edge as isize {
                value += masses[(2 * edge as isize - x) as usize];
            }
            value
        };
        let smoothed: Vec<Complex<f64>> = (0..grid as isize)
            .map(|x| {
                (-(half_width as isize)..=half_width as isize)
                    .map(|j| {
                        let d = j as f64 / edge as f64;
                        mirrored(x - j) * (-d * d / (2.0 * sigma * sigma)).exp()
                    })
                    .sum()
            })
            .collect();
        interpolated_ratio(&smoothed, evaluation_points(sigma))
    }

    #[test]
    fn fft_with_short_kernel_reach_matches_direct_convolution() {
        let (scores, outcomes) = sample(3000);
        let data = SmoothEceData::new(&scores, &outcomes);
        let counts = vec![1; scores.len()];
        for sigma in [0.003, 0.0047, 0.02, 0.3] {
            let mut workspace = SmoothEceWorkspace::default();
            workspace.load_weights(&data, &counts, &all_rows(scores.len()));
            let fast = workspace.at_bandwidth(sigma);
            let direct = direct_discrete(&scores, &outcomes, sigma);
            assert!((fast - direct).abs() < 1e-11 * direct, "σ={sigma}: {fast} vs {direct}");
        }
        // Small σ: the Gaussian underflows long before offset 1/2, so the transform is short.
        let kernel = kernel_spectrum(0.003, grid_points(0.003), &mut FftPlanner::new());
        assert!(kernel.reach < (grid_points(0.003) - 1) / 4, "{}", kernel.reach);
    }

    #[test]
    fn cached_spectra_give_the_values_of_fresh_workspaces() {
        let (scores, outcomes) = sample(2000);
        let data = SmoothEceData::new(&scores, &outcomes);
        let n = scores.len();
        let ones = vec![1u32; n];
        let resampled: Vec<u32> = (0..n).map(|i| (i * 13 % 5) as u32 / 2).collect();
        let rows = |counts: &[u32]| -> Vec<u32> { (0..n as u32).filter(|&i| counts[i as usize] > 0).collect() };
        let fresh = |counts: &[u32], sigma: f64| {
            let mut workspace = SmoothEceWorkspace::default();
            workspace.load_weights(&data, counts, &rows(counts));
            workspace.at_bandwidth(sigma)
        };
        // One workspace through two weightings and σ's that share and do not share grids.
        let mut shared = SmoothEceWorkspace::default();
        for counts in [&ones, &resampled, &ones] {
            shared.load_weights(&data, counts, &rows(counts));
            for sigma in [0.05, 0.003, 0.04, 0.0047, 0.003] {
                assert_eq!(shared.at_bandwidth(sigma), fresh(counts, sigma), "σ={sigma}");
            }
        }
        let automatic = data.smooth_ece(&resampled, &rows(&resampled), &mut shared);
        let alone = data.smooth_ece(&resampled, &rows(&resampled), &mut SmoothEceWorkspace::default());
        assert_eq!(automatic, alone);
        assert_ne!(fresh(&ones, 0.05), fresh(&resampled, 0.05));
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
