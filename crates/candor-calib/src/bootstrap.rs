//! Percentile-bootstrap confidence intervals for every metric, and the paired bootstrap for the
//! difference between two probability matrices scored on the same examples.
//!
//! A resample is represented by its multinomial counts: resample `b` draws `N` row indices
//! uniformly with replacement from a ChaCha8 generator seeded with the user's `seed` on stream
//! `b` (see [`resample_counts`]), and row `i` then counts `w_i` times. The metrics are evaluated
//! directly on these weights (see [`metrics_for_counts`]), which gives exactly the values of the
//! materialised resample without copying any rows. Resamples are processed in blocks, in
//! parallel; every resample depends only on `(seed, b)`, so results are identical for any
//! number of threads.
//!
//! Intervals are percentile intervals: the `(1 − level)/2` and `(1 + level)/2` quantiles of the
//! resampled values, with linear interpolation between order statistics (numpy's default
//! "linear" rule). A metric that is undefined in a resample (AUROC when the resample is all
//! correct or all wrong) is skipped for that resample; the interval uses the defined ones and
//! their number is reported.

use crate::error::{CalibError, Result};
use crate::matrix::ScoreMatrix;
use crate::metrics::{EvalWorkspace, MetricOptions, Metric, MetricValues, PreparedMetrics};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// The default number of bootstrap resamples.
pub const DEFAULT_RESAMPLES: usize = 1000;
/// The default confidence level of the intervals.
pub const DEFAULT_LEVEL: f64 = 0.95;
/// Resamples evaluated together (their O(N·K) column sums share one pass over the matrix).
const BLOCK: usize = 32;

/// How to bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapOptions {
    /// Number of resamples `B`; 0 gives point estimates without intervals.
    pub resamples: usize,
    /// Seed of the resampling generator.
    pub seed: u64,
    /// Confidence level of the intervals, in `(0, 1)`.
    pub level: f64,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        Self {
            resamples: DEFAULT_RESAMPLES,
            seed: 0,
            level: DEFAULT_LEVEL,
        }
    }
}

impl BootstrapOptions {
    pub(crate) fn validate(&self) -> Result<()> {
        if !(self.level > 0.0 && self.level < 1.0) {
            return Err(CalibError::InvalidParameter {
                name: "level",
                reason: format!("must be in (0, 1), got {}", self.level),
            });
        }
        if u64::try_from(self.resamples).is_err() {
            return Err(CalibError::InvalidParameter {
                name: "resamples",
                reason: "too many resamples".into(),
            });
        }
        Ok(())
    }
}

/// A metric's point estimate with its bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricEstimate {
    /// Which metric.
    pub metric: Metric,
    /// The value on the full data (NaN where undefined, e.g. AUROC with one outcome).
    pub value: f64,
    /// Lower interval bound; `None` when `resamples` is 0 or no resample was defined.
    pub ci_low: Option<f64>,
    /// Upper interval bound; `None` as for `ci_low`.
    pub ci_high: Option<f64>,
    /// Number of resamples in which the metric was defined (finite).
    pub defined_resamples: usize,
}

/// The paired-bootstrap comparison of one metric between matrices `a` and `b`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricDifference {
    /// Which metric.
    pub metric: Metric,
    /// The metric of `a` on the full data.
    pub value_a: f64,
    /// The metric of `b` on the full data.
    pub value_b: f64,
    /// `value_a − value_b`.
    pub difference: f64,
    /// Lower interval bound of the difference; `None` when no resample was defined.
    pub ci_low: Option<f64>,
    /// Upper interval bound of the difference.
    pub ci_high: Option<f64>,
    /// Fraction of the defined resamples in which `a − b ≤ 0` (for an error metric: how often
    /// `a` was at least as good as `b`); `None` when no resample was defined.
    pub fraction_at_most_zero: Option<f64>,
    /// Number of resamples in which the difference was defined for both matrices.
    pub defined_resamples: usize,
}

/// The multinomial counts of resample `resample`: `n` indices drawn uniformly from `0..n` with a
/// [`ChaCha8Rng`] seeded by `seed` on stream `resample`; `counts[i]` is how often `i` was drawn.
/// Each draw is `random_range(0..n as u32)`, so `n` must not exceed `u32::MAX` (the metric and
/// threshold functions reject larger inputs before resampling).
pub fn resample_counts(n: usize, seed: u64, resample: u64) -> Vec<u32> {
    let mut counts = vec![0u32; n];
    fill_resample_counts(&mut counts, seed, resample);
    counts
}

fn fill_resample_counts(counts: &mut [u32], seed: u64, resample: u64) {
    let n = counts.len() as u32;
    counts.fill(0);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(resample);
    for _ in 0..n {
        counts[rng.random_range(0..n) as usize] += 1;
    }
}

/// All metrics with row `i` counted `counts[i]` times: the metrics of the materialised
/// resample, computed without materialising it.
pub fn metrics_for_counts(
    probs: &ScoreMatrix,
    labels: &[usize],
    counts: &[u32],
    metrics: &MetricOptions,
) -> Result<MetricValues> {
    let prepared = PreparedMetrics::new(probs, labels, metrics)?;
    if counts.len() != prepared.n_rows() {
        return Err(CalibError::Shape {
            what: "counts (one per row)".into(),
            expected: prepared.n_rows(),
            found: counts.len(),
        });
    }
    if counts.iter().all(|&c| c == 0) {
        return Err(CalibError::Empty("all counts are zero".into()));
    }
    let mut column_sums = vec![0.0; prepared.n_classes()];
    prepared.add_column_sums(counts, 1, &mut column_sums);
    Ok(prepared.evaluate(counts, &column_sums, &mut EvalWorkspace::default()))
}

/// The metrics of every resample, in resample order (`options.level` is not used).
pub fn resampled_metrics(
    probs: &ScoreMatrix,
    labels: &[usize],
    options: &BootstrapOptions,
    metrics: &MetricOptions,
) -> Result<Vec<MetricValues>> {
    options.validate()?;
    let prepared = PreparedMetrics::new(probs, labels, metrics)?;
    Ok(resample_all(&[&prepared], options).into_iter().map(|v| v[0]).collect())
}

/// Point estimates and percentile-bootstrap intervals of the wanted metrics, in
/// [`Metric::ALL`] order.
pub fn bootstrap_metrics(
    probs: &ScoreMatrix,
    labels: &[usize],
    options: &BootstrapOptions,
    metrics: &MetricOptions,
) -> Result<Vec<MetricEstimate>> {
    options.validate()?;
    let prepared = PreparedMetrics::new(probs, labels, metrics)?;
    let point = prepared.evaluate_unweighted(&mut EvalWorkspace::default());
    let resampled = resample_all(&[&prepared], options);
    Ok(metrics
        .metrics()
        .into_iter()
        .map(|metric| estimate(metric, point.get(metric), resampled.iter().map(|v| v[0].get(metric)), options.level))
        .collect())
}

/// A metric's point value with the percentile interval of its finite resampled values.
pub(crate) fn estimate(metric: Metric, point: f64, resampled: impl Iterator<Item = f64>, level: f64) -> MetricEstimate {
    let mut values: Vec<f64> = resampled.filter(|v| v.is_finite()).collect();
    let interval = percentile_interval(&mut values, level);
    MetricEstimate {
        metric,
        value: point,
        ci_low: interval.map(|i| i.0),
        ci_high: interval.map(|i| i.1),
        defined_resamples: values.len(),
    }
}

/// The paired difference `a − b` of a metric with the percentile interval of its finite
/// resampled differences and the share of them at most 0.
pub(crate) fn difference(
    metric: Metric,
    (point_a, point_b): (f64, f64),
    resampled: impl Iterator<Item = f64>,
    level: f64,
) -> MetricDifference {
    let mut differences: Vec<f64> = resampled.filter(|d| d.is_finite()).collect();
    let at_most_zero = differences.iter().filter(|&&d| d <= 0.0).count();
    let defined = differences.len();
    let interval = percentile_interval(&mut differences, level);
    MetricDifference {
        metric,
        value_a: point_a,
        value_b: point_b,
        difference: point_a - point_b,
        ci_low: interval.map(|i| i.0),
        ci_high: interval.map(|i| i.1),
        fraction_at_most_zero: (defined > 0).then(|| at_most_zero as f64 / defined as f64),
        defined_resamples: defined,
    }
}

/// Paired bootstrap of `metric(a) − metric(b)` for the wanted metrics: both matrices are
/// evaluated on the same resamples of the shared examples and `labels`.
pub fn paired_bootstrap(
    a: &ScoreMatrix,
    b: &ScoreMatrix,
    labels: &[usize],
    options: &BootstrapOptions,
    metrics: &MetricOptions,
) -> Result<Vec<MetricDifference>> {
    options.validate()?;
    if a.n_rows() != b.n_rows() {
        return Err(CalibError::Shape {
            what: "second probability matrix (rows must match the first)".into(),
            expected: a.n_rows(),
            found: b.n_rows(),
        });
    }
    let prepared_a = PreparedMetrics::new(a, labels, metrics)?;
    let prepared_b = PreparedMetrics::new(b, labels, metrics)?;
    let mut workspace = EvalWorkspace::default();
    let point_a = prepared_a.evaluate_unweighted(&mut workspace);
    let point_b = prepared_b.evaluate_unweighted(&mut workspace);
    let resampled = resample_all(&[&prepared_a, &prepared_b], options);
    Ok(metrics
        .metrics()
        .into_iter()
        .map(|metric| {
            let resampled_differences = resampled.iter().map(|v| v[0].get(metric) - v[1].get(metric));
            difference(metric, (point_a.get(metric), point_b.get(metric)), resampled_differences, options.level)
        })
        .collect())
}

/// The percentile interval of `values` at `level` (values are sorted in place); `None` when
/// empty. Quantile `q` interpolates linearly between order statistics at position `q·(n − 1)`.
pub fn percentile_interval(values: &mut [f64], level: f64) -> Option<(f64, f64)> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    Some((quantile_sorted(values, tail), quantile_sorted(values, 1.0 - tail)))
}

fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let lower = position.floor() as usize;
    let upper = (lower + 1).min(sorted.len() - 1);
    let frac = position - lower as f64;
    sorted[lower] + (sorted[upper] - sorted[lower]) * frac
}

/// Evaluates every prepared matrix on every resample: `result[b][m]`.
fn resample_all(prepared: &[&PreparedMetrics<'_>], options: &BootstrapOptions) -> Vec<Vec<MetricValues>> {
    let n = prepared[0].n_rows();
    let blocks: Vec<usize> = (0..options.resamples).step_by(BLOCK).collect();
    blocks
        .into_par_iter()
        .map_init(BlockWorkspace::default, |workspace, start| {
            let end = (start + BLOCK).min(options.resamples);
            evaluate_block(prepared, n, options.seed, start..end, workspace)
        })
        .flatten_iter()
        .collect()
}

/// Buffers of one thread, reused from block to block.
#[derive(Debug, Default)]
struct BlockWorkspace {
    /// The counts of each resample of the block: in row order while they are drawn, then in
    /// the rank order of the matrix being evaluated.
    counts: Vec<Vec<u32>>,
    /// The same counts transposed: `counts_by_row[i·width + r]`.
    counts_by_row: Vec<u32>,
    evaluation: EvalWorkspace,
}

fn evaluate_block(
    prepared: &[&PreparedMetrics<'_>],
    n: usize,
    seed: u64,
    resamples: std::ops::Range<usize>,
    workspace: &mut BlockWorkspace,
) -> Vec<Vec<MetricValues>> {
    let width = resamples.len();
    let BlockWorkspace { counts, counts_by_row, evaluation } = workspace;
    counts.resize_with(width, || vec![0; n]);
    let counts = &mut counts[..width];
    for (resample_counts, b) in counts.iter_mut().zip(resamples) {
        fill_resample_counts(resample_counts, seed, b as u64);
    }
    counts_by_row.resize(n * width, 0);
    for (i, slot) in counts_by_row.chunks_exact_mut(width).enumerate() {
        for (s, resample) in slot.iter_mut().zip(counts.iter()) {
            *s = resample[i];
        }
    }
    let mut values = vec![Vec::with_capacity(prepared.len()); width];
    for p in prepared {
        let k = p.n_classes();
        let mut column_sums = vec![0.0; width * k];
        p.add_column_sums(&counts_by_row[..n * width], width, &mut column_sums);
        p.rank_block(&counts_by_row[..n * width], width, counts);
        for ((resample_values, ranked), sums) in values.iter_mut().zip(counts.iter()).zip(column_sums.chunks_exact(k)) {
            resample_values.push(p.evaluate_ranked(ranked, sums, evaluation));
        }
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sum_to_n_and_depend_only_on_seed_and_stream() {
        let a = resample_counts(1000, 7, 3);
        assert_eq!(a.iter().map(|&c| c as usize).sum::<usize>(), 1000);
        assert_eq!(a, resample_counts(1000, 7, 3));
        assert_ne!(a, resample_counts(1000, 7, 4));
        assert_ne!(a, resample_counts(1000, 8, 3));
        // About 1/e of the rows are never drawn.
        let zeros = a.iter().filter(|&&c| c == 0).count() as f64 / 1000.0;
        assert!((zeros - (-1f64).exp()).abs() < 0.05, "{zeros}");
    }

    #[test]
    fn percentile_interval_interpolates_linearly() {
        let mut values: Vec<f64> = (0..=100).rev().map(f64::from).collect();
        let (low, high) = percentile_interval(&mut values, 0.9).unwrap();
        assert!((low - 5.0).abs() < 1e-12 && (high - 95.0).abs() < 1e-12);
        let mut four = vec![4.0, 1.0, 3.0, 2.0];
        // q = 0.25 -> position 0.75 -> 1.75; q = 0.75 -> position 2.25 -> 3.25.
        assert_eq!(percentile_interval(&mut four, 0.5), Some((1.75, 3.25)));
        assert_eq!(percentile_interval(&mut [], 0.9), None);
    }

    #[test]
    fn options_are_checked() {
        let probs = ScoreMatrix::from_rows(&[vec![0.9, 0.1], vec![0.2, 0.8]]).unwrap();
        let bad = BootstrapOptions { level: 1.0, ..Default::default() };
        assert!(bootstrap_metrics(&probs, &[0, 1], &bad, &MetricOptions::default()).is_err());
        let other = ScoreMatrix::from_rows(&[vec![0.9, 0.1]]).unwrap();
        assert!(paired_bootstrap(&probs, &other, &[0, 1], &BootstrapOptions::default(), &MetricOptions::default()).is_err());
        assert!(metrics_for_counts(&probs, &[0, 1], &[0, 0], &MetricOptions::default()).is_err());
        assert!(metrics_for_counts(&probs, &[0, 1], &[1], &MetricOptions::default()).is_err());
    }

    #[test]
    fn zero_resamples_give_point_estimates_only() {
        let probs = ScoreMatrix::from_rows(&[vec![0.9, 0.1], vec![0.2, 0.8]]).unwrap();
        let options = BootstrapOptions { resamples: 0, ..Default::default() };
        let estimates = bootstrap_metrics(&probs, &[0, 0], &options, &MetricOptions::default()).unwrap();
        assert_eq!(estimates.len(), Metric::ALL.len());
        assert!(estimates.iter().all(|e| e.ci_low.is_none() && e.defined_resamples == 0));
        assert_eq!(estimates[0].value, 0.5);
    }
}
