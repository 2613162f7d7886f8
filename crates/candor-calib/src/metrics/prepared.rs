//! The metric engine: per-row quantities computed once from the probability matrix, and an
//! evaluation of all thirteen metrics for any integer weighting of the rows.
//!
//! A weight `w_i` means "row `i` occurs `w_i` times", so the plain metrics are the evaluation
//! with all weights 1 and a bootstrap resample is the evaluation with its multinomial counts.
//! Each evaluation is O(N + S) (S = number of probabilities ≥ 1/15) plus the per-class column
//! sums `Σ_i w_i p_ic`, which the caller supplies because they are the only O(N·K) part and are
//! computed for many resamples at once by [`PreparedMetrics::add_column_sums`].

use super::smooth::{SmoothEceData, SmoothEceWorkspace};
use super::{Metric, MetricOptions, MetricValues, EQUAL_MASS_BINS, EQUAL_WIDTH_BINS};
use crate::error::{CalibError, Result};
use crate::matrix::ScoreMatrix;

/// The equal-width bin of a value in `[0, 1]`: `⌊n·x⌋`, with 1.0 in the last bin.
pub(crate) fn equal_width_bin(x: f64, n_bins: usize) -> usize {
    ((x * n_bins as f64) as usize).min(n_bins - 1)
}

/// The equal-mass bin of a tie group whose first ordered position is `start` among `total`
/// items: the largest `b` with `⌊b·total/n_bins⌋ ≤ start`.
pub(crate) fn equal_mass_bin(start: u64, total: u64, n_bins: usize) -> usize {
    let b = (n_bins as u128 * (u128::from(start) + 1)).div_ceil(u128::from(total)) as usize;
    b.saturating_sub(1).min(n_bins - 1)
}

/// A probability in an equal-width bin other than bin 0, kept sparse (≤ 15 per row).
#[derive(Debug, Clone, Copy)]
struct SparseEntry {
    /// Rank of the row (position in ascending-confidence order).
    rank: u32,
    class: u32,
    bin: u8,
    probability: f64,
}

/// The per-row quantities every metric needs, stored in ascending-confidence order so that a
/// single sequential pass serves the binned, tie-group and ordering metrics together.
#[derive(Debug, Clone, Copy)]
struct RankedRow {
    confidence: f64,
    nll: f64,
    brier: f64,
    /// The first of the classes tied at the maximum.
    predicted: u32,
    /// How many classes share the maximum (1 without a tie).
    tied: u32,
    label: u32,
    top_bin: u8,
    gold_bin: u8,
    /// The credit of the top-label prediction: 1/k when the gold label is one of the k
    /// classes tied at the maximum, else 0 (the expected correctness of a random tie-break).
    correct: f64,
    /// Index of the row's tie group (rows of equal confidence), ascending with the rank.
    group: u32,
}

/// Per-row quantities of a probability matrix and labels, ready for weighted evaluation.
#[derive(Debug)]
pub(crate) struct PreparedMetrics<'a> {
    probs: &'a ScoreMatrix,
    options: MetricOptions,
    /// Rows in ascending confidence order (ties by row index).
    ranked: Vec<RankedRow>,
    /// `rank_to_row[r]`: the original index of the row of rank `r`.
    rank_to_row: Vec<u32>,
    /// Probabilities in bins ≥ 1, ordered by rank.
    sparse: Vec<SparseEntry>,
    smooth: SmoothEceData,
}

/// Scratch buffers reused across evaluations (one per thread).
#[derive(Debug, Default)]
pub(crate) struct EvalWorkspace {
    /// Ranks with a non-zero weight, ascending.
    weighted_ranks: Vec<u32>,
    /// Per class and equal-width bin: the weight of the rows whose gold label is that class
    /// and whose gold probability falls in that bin.
    gold_weights: Vec<u64>,
    class_bins: Vec<f64>,
    sparse_sums: Vec<f64>,
    /// Per class: `[true positives, predicted, gold]` weights.
    f1_counts: Vec<[f64; 3]>,
    harmonic: Harmonic,
    pub(crate) smooth: SmoothEceWorkspace,
}

impl<'a> PreparedMetrics<'a> {
    /// Validates the inputs and options and computes the per-row quantities.
    pub(crate) fn new(probs: &'a ScoreMatrix, labels: &[usize], options: &MetricOptions) -> Result<Self> {
        super::validate_inputs(probs, labels)?;
        options.validate()?;
        let n = probs.n_rows();
        if u32::try_from(n).is_err() || u32::try_from(probs.n_classes()).is_err() {
            return Err(CalibError::InvalidParameter {
                name: "probs",
                reason: format!("at most {} rows and classes are supported", u32::MAX),
            });
        }
        let by_row: Vec<RankedRow> =
            probs.rows().zip(labels).map(|(row, &gold)| ranked_row(row, gold, options.epsilon)).collect();
        let mut rank_to_row: Vec<u32> = (0..n as u32).collect();
        rank_to_row.sort_by(|&a, &b| {
            by_row[a as usize].confidence.total_cmp(&by_row[b as usize].confidence).then(a.cmp(&b))
        });
        let mut ranked: Vec<RankedRow> = rank_to_row.iter().map(|&r| by_row[r as usize]).collect();
        for r in 1..n {
            let tied = ranked[r].confidence == ranked[r - 1].confidence;
            ranked[r].group = ranked[r - 1].group + u32::from(!tied);
        }
        let sparse = rank_to_row
            .iter()
            .enumerate()
            .flat_map(|(rank, &row)| sparse_entries(rank as u32, probs.row(row as usize)))
            .collect();
        let confidence: Vec<f64> = ranked.iter().map(|r| r.confidence).collect();
        let correct: Vec<f64> = ranked.iter().map(|r| r.correct).collect();
        Ok(Self {
            probs,
            options: options.clone(),
            smooth: SmoothEceData::new(&confidence, &correct),
            ranked,
            rank_to_row,
            sparse,
        })
    }

    /// Number of rows.
    pub(crate) fn n_rows(&self) -> usize {
        self.ranked.len()
    }

    /// Number of classes.
    pub(crate) fn n_classes(&self) -> usize {
        self.probs.n_classes()
    }

    /// All metrics with every row counted once.
    pub(crate) fn evaluate_unweighted(&self, workspace: &mut EvalWorkspace) -> MetricValues {
        let counts = vec![1u32; self.n_rows()];
        let mut column_sums = vec![0.0; self.n_classes()];
        for row in self.probs.rows() {
            column_sums.iter_mut().zip(row).for_each(|(s, p)| *s += p);
        }
        self.evaluate(&counts, &column_sums, workspace)
    }

    /// Adds `Σ_i counts[r][i]·p_ic` to `out[r·K + c]` for a block of weightings given
    /// transposed: `counts_by_row[i·R + r]` is the weight of row `i` in weighting `r`.
    ///
    /// Rows are taken four at a time so that each output row is loaded and stored once per four
    /// matrix rows; the summation order depends only on the row order, never on the block.
    pub(crate) fn add_column_sums(&self, counts_by_row: &[u32], n_weightings: usize, out: &mut [f64]) {
        const ROWS_AT_ONCE: usize = 4;
        let k = self.n_classes();
        let values = self.probs.values();
        let full = self.n_rows() / ROWS_AT_ONCE * ROWS_AT_ONCE;
        for first in (0..full).step_by(ROWS_AT_ONCE) {
            let p = &values[first * k..(first + ROWS_AT_ONCE) * k];
            let (p0, rest) = p.split_at(k);
            let (p1, rest) = rest.split_at(k);
            let (p2, p3) = rest.split_at(k);
            let weights = &counts_by_row[first * n_weightings..(first + ROWS_AT_ONCE) * n_weightings];
            for (r, sums) in out.chunks_exact_mut(k).enumerate() {
                let w = [0, 1, 2, 3].map(|j| f64::from(weights[j * n_weightings + r]));
                if w == [0.0; ROWS_AT_ONCE] {
                    continue;
                }
                for c in 0..k {
                    sums[c] += w[0] * p0[c] + w[1] * p1[c] + w[2] * p2[c] + w[3] * p3[c];
                }
            }
        }
        for i in full..self.n_rows() {
            let row = self.probs.row(i);
            let weights = &counts_by_row[i * n_weightings..(i + 1) * n_weightings];
            for (sums, &w) in out.chunks_exact_mut(k).zip(weights) {
                let w = f64::from(w);
                sums.iter_mut().zip(row).for_each(|(s, p)| *s += w * p);
            }
        }
    }

    /// All metrics for the row weights `counts` (original row order, at least one non-zero),
    /// given the weighted column sums `column_sums[c] = Σ_i counts[i]·p_ic`.
    pub(crate) fn evaluate(
        &self,
        counts: &[u32],
        column_sums: &[f64],
        workspace: &mut EvalWorkspace,
    ) -> MetricValues {
        let ranked_counts: Vec<u32> = self.rank_to_row.iter().map(|&row| counts[row as usize]).collect();
        self.evaluate_ranked(&ranked_counts, column_sums, workspace)
    }

    /// Gathers a block of weightings given transposed (`counts_by_row[i·R + r]`, as for
    /// [`Self::add_column_sums`]) into rank order: `ranked[r][rank]` becomes the weight of the
    /// row of rank `rank` in weighting `r`.
    ///
    /// Ranks are taken in tiles, and a tile's rows are read for every weighting before moving
    /// on, so each row's R weights are fetched from memory once rather than once per weighting.
    pub(crate) fn rank_block(&self, counts_by_row: &[u32], n_weightings: usize, ranked: &mut [Vec<u32>]) {
        const TILE: usize = 512;
        for weights in ranked.iter_mut() {
            weights.resize(self.n_rows(), 0);
        }
        for (tile, rows) in self.rank_to_row.chunks(TILE).enumerate() {
            let ranks = tile * TILE..tile * TILE + rows.len();
            for (r, weights) in ranked.iter_mut().enumerate() {
                for (slot, &row) in weights[ranks.clone()].iter_mut().zip(rows) {
                    *slot = counts_by_row[row as usize * n_weightings + r];
                }
            }
        }
    }

    /// All metrics for the row weights `ranked_counts`, given by rank (at least one non-zero),
    /// and the weighted column sums as for [`Self::evaluate`].
    pub(crate) fn evaluate_ranked(
        &self,
        ranked_counts: &[u32],
        column_sums: &[f64],
        workspace: &mut EvalWorkspace,
    ) -> MetricValues {
        let mut weighted_ranks = std::mem::take(&mut workspace.weighted_ranks);
        let weighted = list_weighted_ranks(ranked_counts, &mut weighted_ranks);
        let weighted_ranks_in_use = &weighted_ranks[..weighted];
        let sums = self.ranked_pass(ranked_counts, weighted_ranks_in_use, workspace);
        let total = sums.total as f64;
        let bins = top_label_bins(&sums.bins, total);
        let wanted = |metric| self.options.wants(metric);
        let values = MetricValues {
            accuracy: sums.correct / total,
            macro_f1: macro_f1(&workspace.f1_counts),
            nll: sums.nll / total,
            brier: sums.brier / total,
            ece_15_equal_width: bins.ece,
            ece_10_equal_mass: sums.equal_mass.gap_sum() / total,
            classwise_ece: if wanted(Metric::ClasswiseEce) {
                self.classwise_ece(ranked_counts, column_sums, total, workspace)
            } else {
                f64::NAN
            },
            mce: bins.mce,
            rmsce: bins.rmsce,
            debiased_l2_ce: bins.debiased_l2_ce,
            smooth_ece: if wanted(Metric::SmoothEce) {
                self.smooth.smooth_ece(ranked_counts, weighted_ranks_in_use, &mut workspace.smooth).value
            } else {
                f64::NAN
            },
            auroc: sums.auroc(),
            aurc: sums.aurc.value(total - sums.correct, total),
        };
        workspace.weighted_ranks = weighted_ranks;
        values
    }

    /// One sequential pass over the rows of non-zero weight in confidence order (`counts` by
    /// rank, `weighted_ranks` the ranks with a non-zero count): totals, top-label bins, F1
    /// counts, the gold weights of classwise ECE, and per tie group the equal-mass bins, AUROC
    /// pair counts and AURC sums.
    ///
    /// Rows and tie groups of weight 0 are skipped: they would only add zeros (and a group's
    /// equal-mass bin depends only on the weight before it), so the sums are exactly those of a
    /// pass over all rows. Top-label bins are visited in ascending order, so the current bin's
    /// sums are kept in registers and stored when the bin changes.
    fn ranked_pass(&self, counts: &[u32], weighted_ranks: &[u32], workspace: &mut EvalWorkspace) -> PassSums {
        let k = self.n_classes();
        workspace.f1_counts.clear();
        workspace.f1_counts.resize(k, [0.0; 3]);
        workspace.gold_weights.clear();
        workspace.gold_weights.resize(k * EQUAL_WIDTH_BINS, 0);
        let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
        workspace.harmonic.ensure(total);
        let mut sums = PassSums::new(total);
        let (mut bin, mut bin_sums) = (0, [0.0; 3]);
        let mut group = Group { index: u32::MAX, confidence: 0.0, weight: 0, correct: 0.0 };
        for &rank in weighted_ranks {
            let row = &self.ranked[rank as usize];
            let count = u64::from(counts[rank as usize]);
            let w = f64::from(counts[rank as usize]);
            sums.correct += w * row.correct;
            sums.nll += w * row.nll;
            sums.brier += w * row.brier;
            if usize::from(row.top_bin) != bin {
                sums.bins[bin] = bin_sums;
                (bin, bin_sums) = (usize::from(row.top_bin), [0.0; 3]);
            }
            bin_sums[0] += w;
            bin_sums[1] += w * (row.confidence - row.correct);
            bin_sums[2] += w * row.correct;
            self.add_f1_counts(rank, row, w, &mut workspace.f1_counts);
            workspace.gold_weights[row.label as usize * EQUAL_WIDTH_BINS + usize::from(row.gold_bin)] += count;
            if row.group != group.index {
                if group.weight > 0 {
                    sums.add_group(&group, &workspace.harmonic);
                }
                group = Group { index: row.group, confidence: row.confidence, weight: 0, correct: 0.0 };
            }
            group.weight += count;
            group.correct += w * row.correct;
        }
        sums.bins[bin] = bin_sums;
        if group.weight > 0 {
            sums.add_group(&group, &workspace.harmonic);
        }
        sums
    }

    /// Adds a row of weight `w` to the per-class `[true positives, predicted, gold]` of F1: a
    /// k-way tie at the maximum counts as 1/k of a prediction of each tied class.
    fn add_f1_counts(&self, rank: u32, row: &RankedRow, w: f64, f1: &mut [[f64; 3]]) {
        f1[row.label as usize][2] += w;
        if row.tied == 1 {
            f1[row.predicted as usize][0] += w * row.correct;
            f1[row.predicted as usize][1] += w;
            return;
        }
        let probabilities = self.probs.row(self.rank_to_row[rank as usize] as usize);
        let share = w / f64::from(row.tied);
        for (class, _) in probabilities.iter().enumerate().filter(|&(_, &p)| p == row.confidence) {
            f1[class][1] += share;
            if class == row.label as usize {
                f1[class][0] += share;
            }
        }
    }

    /// Class-wise ECE from the gold terms left by [`Self::ranked_pass`], the sparse
    /// probabilities and the column sums (bin 0 of class c = column sum − its sparse entries).
    fn classwise_ece(
        &self,
        ranked_counts: &[u32],
        column_sums: &[f64],
        total: f64,
        workspace: &mut EvalWorkspace,
    ) -> f64 {
        let k = self.n_classes();
        workspace.sparse_sums.clear();
        workspace.sparse_sums.resize(k, 0.0);
        workspace.class_bins.clear();
        workspace.class_bins.extend(workspace.gold_weights.iter().map(|&w| 0.0 - w as f64));
        for entry in &self.sparse {
            let mass = f64::from(ranked_counts[entry.rank as usize]) * entry.probability;
            let class = entry.class as usize;
            workspace.class_bins[class * EQUAL_WIDTH_BINS + usize::from(entry.bin)] += mass;
            workspace.sparse_sums[class] += mass;
        }
        let mut gap_sum = 0.0;
        for (class, bins) in workspace.class_bins.chunks_exact(EQUAL_WIDTH_BINS).enumerate() {
            let bin0 = bins[0] + column_sums[class] - workspace.sparse_sums[class];
            gap_sum += bin0.abs() + bins[1..].iter().map(|s| s.abs()).sum::<f64>();
        }
        gap_sum / (total * k as f64)
    }
}

/// The per-row quantities of one row with gold label `gold`; `−ln p_gold` is taken with
/// `p_gold` floored at `epsilon`.
fn ranked_row(row: &[f64], gold: usize, epsilon: f64) -> RankedRow {
    let (predicted, confidence) = argmax(row);
    let tied = row.iter().filter(|&&p| p == confidence).count();
    let p_gold = row[gold];
    RankedRow {
        confidence,
        nll: -p_gold.max(epsilon).ln(),
        brier: row.iter().map(|p| p * p).sum::<f64>() - 2.0 * p_gold + 1.0,
        predicted: predicted as u32,
        tied: tied as u32,
        label: gold as u32,
        top_bin: equal_width_bin(confidence, EQUAL_WIDTH_BINS) as u8,
        gold_bin: equal_width_bin(p_gold, EQUAL_WIDTH_BINS) as u8,
        correct: if p_gold == confidence { 1.0 / tied as f64 } else { 0.0 },
        group: 0,
    }
}

/// Lists the ranks with a non-zero weight at the start of `weighted_ranks` (branch-free: about
/// 1/e of a resample's rows are 0) and returns how many there are. `weighted_ranks` keeps one
/// slot per row between calls, so it is not cleared.
fn list_weighted_ranks(ranked_counts: &[u32], weighted_ranks: &mut Vec<u32>) -> usize {
    weighted_ranks.resize(ranked_counts.len(), 0);
    let mut len = 0;
    for (rank, &count) in ranked_counts.iter().enumerate() {
        weighted_ranks[len] = rank as u32;
        len += usize::from(count != 0);
    }
    len
}

/// The probabilities of a row outside equal-width bin 0.
fn sparse_entries(rank: u32, row: &[f64]) -> impl Iterator<Item = SparseEntry> + '_ {
    row.iter().enumerate().filter_map(move |(class, &probability)| {
        let bin = equal_width_bin(probability, EQUAL_WIDTH_BINS);
        (bin > 0).then_some(SparseEntry { rank, class: class as u32, bin: bin as u8, probability })
    })
}

/// Equal-mass binning of tie groups visited in ascending order: a group goes to the bin in
/// which its first position falls (see [`equal_mass_bin`]); the bin index only moves forward,
/// so no division is needed per group.
struct EqualMassWalk {
    total: u64,
    before: u64,
    bin: usize,
    next_cut: u64,
    gap_sums: [f64; EQUAL_MASS_BINS],
}

impl EqualMassWalk {
    fn new(total: u64) -> Self {
        Self {
            total,
            before: 0,
            bin: 0,
            next_cut: Self::cut(1, total),
            gap_sums: [0.0; EQUAL_MASS_BINS],
        }
    }

    /// `⌊b·total/n_bins⌋`, or never reached for `b = n_bins`.
    fn cut(b: usize, total: u64) -> u64 {
        if b < EQUAL_MASS_BINS {
            (b as u128 * u128::from(total) / EQUAL_MASS_BINS as u128) as u64
        } else {
            u64::MAX
        }
    }

    fn add(&mut self, group: &Group) {
        while self.before >= self.next_cut {
            self.bin += 1;
            self.next_cut = Self::cut(self.bin + 1, self.total);
        }
        debug_assert_eq!(self.bin, equal_mass_bin(self.before, self.total, EQUAL_MASS_BINS));
        self.gap_sums[self.bin] += to_f64(group.weight) * group.confidence - group.correct;
        self.before += group.weight;
    }

    fn gap_sum(&self) -> f64 {
        self.gap_sums.iter().map(|s| s.abs()).sum()
    }
}

/// AURC accumulated over tie groups visited in ascending confidence order.
///
/// In descending order, a group of `m` rows with `e` errors that follows `k0` rows with `E`
/// errors has expected errors `E + j·e/m` at its position `j` (ties are spread evenly), so it
/// adds `Σ_{j=1..m} (E + j·e/m)/(k0 + j) = E·ΔH + (e/m)·(m − k0·ΔH)` to the risk sum, with
/// `ΔH = Σ_{j=1..m} 1/(k0 + j)`. Groups of weight 0 add nothing. Visiting groups in ascending order, `k0 = W − before − m` and
/// `E = TE − errors_before − e` where the total error count `TE` is known only at the end, so
/// the sums `Σ ΔH`, `Σ (errors_before + e)·ΔH` and `Σ (e/m)(m − k0·ΔH)` are kept separately.
#[derive(Debug, Default)]
struct AurcSums {
    delta_h: f64,
    errors_through_times_delta_h: f64,
    within_group: f64,
}

impl AurcSums {
    fn add(&mut self, group: &Group, before: u64, errors_before: f64, total: u64, harmonic: &Harmonic) {
        let m = group.weight;
        let errors = to_f64(m) - group.correct;
        let k0 = total - before - m;
        let delta_h = harmonic.range(k0, m);
        self.delta_h += delta_h;
        self.errors_through_times_delta_h += (errors_before + errors) * delta_h;
        self.within_group += errors * harmonic.reciprocal(m) * (to_f64(m) - to_f64(k0) * delta_h);
    }

    fn value(&self, total_errors: f64, total: f64) -> f64 {
        (total_errors * self.delta_h - self.errors_through_times_delta_h + self.within_group) / total
    }
}

/// Reciprocals `1/k` and harmonic numbers `H_k`: tabulated up to [`Harmonic::TABLE_LIMIT`]
/// (grown on demand), computed directly beyond it, so arbitrarily large weights cost no memory.
#[derive(Debug, Default)]
pub(crate) struct Harmonic {
    reciprocals: Vec<f64>,
    prefix: Vec<f64>,
    /// Running Kahan compensation of `prefix`.
    compensation: f64,
}

impl Harmonic {
    /// Largest `k` kept in the tables.
    const TABLE_LIMIT: u64 = 1 << 20;

    /// Makes the tables cover `0..=min(n, TABLE_LIMIT)`.
    fn ensure(&mut self, n: u64) {
        let n = n.min(Self::TABLE_LIMIT) as usize;
        let start = self.reciprocals.len();
        for k in start..=n {
            let reciprocal = if k == 0 { 0.0 } else { 1.0 / k as f64 };
            self.reciprocals.push(reciprocal);
            // Compensated (Kahan) summation keeps H_k within an ulp or two, so the table
            // joins the asymptotic expansion seamlessly.
            let previous = self.prefix.last().copied().unwrap_or(0.0);
            let term = reciprocal - self.compensation;
            let sum = previous + term;
            self.compensation = (sum - previous) - term;
            self.prefix.push(sum);
        }
    }

    /// `1/k` (0 for `k = 0`).
    fn reciprocal(&self, k: u64) -> f64 {
        match self.reciprocals.get(k as usize) {
            Some(&r) => r,
            None => 1.0 / k as f64,
        }
    }

    /// `H_n`; beyond the table by its asymptotic expansion (error far below `1e-16` there).
    fn number(&self, n: u64) -> f64 {
        match self.prefix.get(n as usize) {
            Some(&h) => h,
            None => {
                let n = n as f64;
                let inverse_square = 1.0 / (n * n);
                n.ln() + EULER_GAMMA + 0.5 / n - inverse_square / 12.0
                    + inverse_square * inverse_square / 120.0
            }
        }
    }

    /// `Σ_{j=1..m} 1/(k0 + j) = H_{k0+m} − H_{k0}` (0 for an empty range). The difference is
    /// accurate to about `1e-15` absolute, far below what the metrics resolve.
    fn range(&self, k0: u64, m: u64) -> f64 {
        self.number(k0 + m) - self.number(k0)
    }
}

/// `x as f64` (the same value), through the signed conversion, which is a single instruction
/// on every x86-64 while the unsigned one is not.
fn to_f64(x: u64) -> f64 {
    match i64::try_from(x) {
        Ok(signed) => signed as f64,
        Err(_) => x as f64,
    }
}

/// The Euler–Mascheroni constant.
const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

/// Argmax with ties to the lowest index, and the maximum.
fn argmax(row: &[f64]) -> (usize, f64) {
    row.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) })
}

/// The metrics of the top-label equal-width bins.
struct BinnedErrors {
    ece: f64,
    mce: f64,
    rmsce: f64,
    debiased_l2_ce: f64,
}

/// ECE, MCE, RMSCE and the debiased L2 calibration error from per-bin
/// `[weight, Σ w·(conf − correct), Σ w·correct]`.
///
/// The debiased estimate (Kumar, Liang & Ma 2019, "Verified Uncertainty Calibration") removes
/// the sampling variance of each bin's accuracy from the plug-in squared gap:
/// `sqrt(max(0, Σ_b (n_b/N)·[(acc_b − conf_b)² − acc_b(1 − acc_b)/(n_b − 1)]))`, where bins
/// with fewer than two rows contribute nothing (as in the authors' reference code).
fn top_label_bins(bins: &[[f64; 3]; EQUAL_WIDTH_BINS], total: f64) -> BinnedErrors {
    let (mut ece, mut mce, mut squared, mut debiased_squared) = (0.0, 0.0f64, 0.0, 0.0);
    for &[weight, gap_sum, correct] in bins.iter().filter(|b| b[0] > 0.0) {
        let gap = (gap_sum / weight).abs();
        ece += gap_sum.abs();
        mce = mce.max(gap);
        squared += weight * gap * gap;
        if weight >= 2.0 {
            let accuracy = correct / weight;
            debiased_squared += weight * (gap * gap - accuracy * (1.0 - accuracy) / (weight - 1.0));
        }
    }
    BinnedErrors {
        ece: ece / total,
        mce,
        rmsce: (squared / total).sqrt(),
        debiased_l2_ce: (debiased_squared / total).max(0.0).sqrt(),
    }
}

/// Macro-F1 from per-class `[true positives, predicted, gold]`, over classes that occur.
fn macro_f1(per_class: &[[f64; 3]]) -> f64 {
    let (sum, present) = per_class
        .iter()
        .filter(|[_, predicted, gold]| predicted + gold > 0.0)
        .fold((0.0, 0usize), |(sum, n), [tp, predicted, gold]| (sum + 2.0 * tp / (predicted + gold), n + 1));
    sum / present as f64
}

/// Sums collected by [`PreparedMetrics::ranked_pass`].
struct PassSums {
    total: u64,
    /// Σ w·correct (fractional under ties).
    correct: f64,
    nll: f64,
    brier: f64,
    /// Per equal-width bin: `[weight, Σ w·(confidence − correct), Σ w·correct]`.
    bins: [[f64; 3]; EQUAL_WIDTH_BINS],
    equal_mass: EqualMassWalk,
    wrong_before: f64,
    won_pairs: f64,
    aurc: AurcSums,
}

impl PassSums {
    fn new(total: u64) -> Self {
        Self {
            total,
            correct: 0.0,
            nll: 0.0,
            brier: 0.0,
            bins: [[0.0; 3]; EQUAL_WIDTH_BINS],
            equal_mass: EqualMassWalk::new(total),
            wrong_before: 0.0,
            won_pairs: 0.0,
            aurc: AurcSums::default(),
        }
    }

    /// Adds the next tie group (ascending confidence).
    #[inline(always)]
    fn add_group(&mut self, group: &Group, harmonic: &Harmonic) {
        let before = self.equal_mass.before;
        self.aurc.add(group, before, self.wrong_before, self.total, harmonic);
        self.equal_mass.add(group);
        let wrong = to_f64(group.weight) - group.correct;
        self.won_pairs += group.correct * (self.wrong_before + 0.5 * wrong);
        self.wrong_before += wrong;
    }

    /// Mann–Whitney AUROC of confidence for correctness (a tied row counts as `correct` of a
    /// correct row and the rest of a wrong one); NaN with only one outcome.
    fn auroc(&self) -> f64 {
        let correct = to_f64(self.total) - self.wrong_before;
        if correct > 0.0 && self.wrong_before > 0.0 {
            self.won_pairs / (correct * self.wrong_before)
        } else {
            f64::NAN
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Group {
    /// The tie group's index (see [`RankedRow::group`]).
    index: u32,
    confidence: f64,
    weight: u64,
    /// Σ w·correct of the group's rows.
    correct: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_mass_bins_follow_floor_cut_points() {
        // 25 items: cut points ⌊2.5·b⌋ = 0, 2, 5, 7, 10, 12, 15, 17, 20, 22.
        let bins: Vec<_> = (0..25).map(|s| equal_mass_bin(s, 25, 10)).collect();
        let expected: Vec<usize> = (0..25)
            .map(|s| (0..10).filter(|&b| (b * 25) / 10 <= s).max().unwrap())
            .collect();
        assert_eq!(bins, expected);
        assert_eq!(&bins[..6], &[0, 0, 1, 1, 1, 2]);
        // Fewer items than bins: bins 0, 2, 4, ... stay empty.
        assert_eq!((0..5).map(|s| equal_mass_bin(s, 5, 10)).collect::<Vec<_>>(), [1, 3, 5, 7, 9]);
    }

    #[test]
    fn equal_width_bin_edges() {
        assert_eq!(equal_width_bin(0.0, 15), 0);
        assert_eq!(equal_width_bin(1.0 / 15.0 - 1e-12, 15), 0);
        assert_eq!(equal_width_bin(0.5, 15), 7);
        assert_eq!(equal_width_bin(1.0, 15), 14);
    }

    #[test]
    fn harmonic_range_matches_direct_sum() {
        let mut table = Harmonic::default();
        table.ensure(2000);
        for (k0, m) in [(0, 100), (10, 65), (1000, 500), (7, 3), (1999, 1), (5, 0)] {
            let direct: f64 = (1..=m).map(|j| 1.0 / (k0 + j) as f64).sum();
            assert!((table.range(k0, m) - direct).abs() < 1e-14);
        }
        // Beyond the table: the asymptotic expansion continues the tabulated values.
        let limit = Harmonic::TABLE_LIMIT;
        let mut big = Harmonic::default();
        big.ensure(limit);
        let direct: f64 = (1..=1000).map(|j| 1.0 / (limit - 500 + j) as f64).sum();
        assert!((big.range(limit - 500, 1000) - direct).abs() < 1e-14);
        assert_eq!(big.reciprocal(limit + 3), 1.0 / (limit + 3) as f64);
    }

    #[test]
    fn argmax_ties_go_to_lowest_index() {
        assert_eq!(argmax(&[0.2, 0.4, 0.4]), (1, 0.4));
        assert_eq!(argmax(&[0.5, 0.5]), (0, 0.5));
    }
}
