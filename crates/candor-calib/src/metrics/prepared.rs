//! The metric engine: per-row quantities computed once from the probability matrix, and an
//! evaluation of all twelve metrics for any integer weighting of the rows.
//!
//! A weight `w_i` means "row `i` occurs `w_i` times", so the plain metrics are the evaluation
//! with all weights 1 and a bootstrap resample is the evaluation with its multinomial counts.
//! Each evaluation is O(N + S) (S = number of probabilities ≥ 1/15) plus the per-class column
//! sums `Σ_i w_i p_ic`, which the caller supplies because they are the only O(N·K) part and are
//! computed for many resamples at once by [`PreparedMetrics::add_column_sums`].

use super::smooth::{SmoothEceData, SmoothEceWorkspace};
use super::{MetricValues, EQUAL_MASS_BINS, EQUAL_WIDTH_BINS, NLL_PROBABILITY_FLOOR};
use crate::error::{CalibError, Result};
use crate::matrix::ScoreMatrix;

/// The equal-width bin of a value in `[0, 1]`: `⌊n·x⌋`, with 1.0 in the last bin.
pub(crate) fn equal_width_bin(x: f64, n_bins: usize) -> usize {
    ((x * n_bins as f64) as usize).min(n_bins - 1)
}

/// The equal-mass bin of a tie group whose first ordered position is `start` among `total`
/// items: the largest `b` with `⌊b·total/n_bins⌋ ≤ start`.
pub(crate) fn equal_mass_bin(start: u64, total: u64, n_bins: usize) -> usize {
    let b = (n_bins as u64 * (start + 1)).div_ceil(total) as usize;
    b.saturating_sub(1).min(n_bins - 1)
}

/// A probability in an equal-width bin other than bin 0, kept sparse (≤ 15 per row).
#[derive(Debug, Clone, Copy)]
struct SparseEntry {
    row: u32,
    class: u32,
    bin: u8,
    probability: f64,
}

/// Per-row quantities of a probability matrix and labels, ready for weighted evaluation.
#[derive(Debug)]
pub(crate) struct PreparedMetrics<'a> {
    probs: &'a ScoreMatrix,
    labels: Vec<u32>,
    predicted: Vec<u32>,
    confidence: Vec<f64>,
    correct: Vec<f64>,
    nll: Vec<f64>,
    brier: Vec<f64>,
    top_bin: Vec<u8>,
    gold_bin: Vec<u8>,
    sparse: Vec<SparseEntry>,
    /// Rows ordered by confidence ascending (ties by row index).
    ascending: Vec<u32>,
    /// `group_ends[j]`: ordered position `j` is the last of its group of equal confidences.
    group_ends: Vec<bool>,
    smooth: SmoothEceData,
}

/// Scratch buffers reused across evaluations (one per thread).
#[derive(Debug, Default)]
pub(crate) struct EvalWorkspace {
    class_bins: Vec<f64>,
    sparse_sums: Vec<f64>,
    f1_counts: Vec<[f64; 3]>,
    harmonic: Vec<f64>,
    groups: Vec<Group>,
    pub(crate) smooth: SmoothEceWorkspace,
}

impl<'a> PreparedMetrics<'a> {
    /// Validates the inputs and computes the per-row quantities.
    pub(crate) fn new(probs: &'a ScoreMatrix, labels: &[usize]) -> Result<Self> {
        super::validate_inputs(probs, labels)?;
        let n = probs.n_rows();
        if u32::try_from(n).is_err() || u32::try_from(probs.n_classes()).is_err() {
            return Err(CalibError::InvalidParameter {
                name: "probs",
                reason: format!("at most {} rows and classes are supported", u32::MAX),
            });
        }
        let mut prepared = Self {
            probs,
            labels: labels.iter().map(|&l| l as u32).collect(),
            predicted: Vec::with_capacity(n),
            confidence: Vec::with_capacity(n),
            correct: Vec::with_capacity(n),
            nll: Vec::with_capacity(n),
            brier: Vec::with_capacity(n),
            top_bin: Vec::with_capacity(n),
            gold_bin: Vec::with_capacity(n),
            sparse: Vec::new(),
            ascending: Vec::new(),
            group_ends: Vec::new(),
            smooth: SmoothEceData::default(),
        };
        for (i, (row, &gold)) in probs.rows().zip(labels).enumerate() {
            prepared.add_row(i, row, gold);
        }
        prepared.order_by_confidence();
        prepared.smooth = SmoothEceData::new(&prepared.confidence, &prepared.correct);
        Ok(prepared)
    }

    fn add_row(&mut self, i: usize, row: &[f64], gold: usize) {
        let (predicted, confidence) = argmax(row);
        let correct = f64::from(u8::from(predicted == gold));
        let p_gold = row[gold];
        self.predicted.push(predicted as u32);
        self.confidence.push(confidence);
        self.correct.push(correct);
        self.nll.push(-p_gold.max(NLL_PROBABILITY_FLOOR).ln());
        self.brier.push(row.iter().map(|p| p * p).sum::<f64>() - 2.0 * p_gold + 1.0);
        self.top_bin.push(equal_width_bin(confidence, EQUAL_WIDTH_BINS) as u8);
        self.gold_bin.push(equal_width_bin(p_gold, EQUAL_WIDTH_BINS) as u8);
        for (class, &probability) in row.iter().enumerate() {
            let bin = equal_width_bin(probability, EQUAL_WIDTH_BINS);
            if bin > 0 {
                self.sparse.push(SparseEntry {
                    row: i as u32,
                    class: class as u32,
                    bin: bin as u8,
                    probability,
                });
            }
        }
    }

    fn order_by_confidence(&mut self) {
        let mut order: Vec<u32> = (0..self.confidence.len() as u32).collect();
        let conf = &self.confidence;
        order.sort_by(|&a, &b| conf[a as usize].total_cmp(&conf[b as usize]).then(a.cmp(&b)));
        self.group_ends = (0..order.len())
            .map(|j| {
                order
                    .get(j + 1)
                    .is_none_or(|&next| conf[next as usize] != conf[order[j] as usize])
            })
            .collect();
        self.ascending = order;
    }

    /// Number of rows.
    pub(crate) fn n_rows(&self) -> usize {
        self.confidence.len()
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
    pub(crate) fn add_column_sums(&self, counts_by_row: &[u32], n_weightings: usize, out: &mut [f64]) {
        let k = self.n_classes();
        for (row, weights) in self.probs.rows().zip(counts_by_row.chunks_exact(n_weightings)) {
            for (sums, &w) in out.chunks_exact_mut(k).zip(weights) {
                if w != 0 {
                    let w = f64::from(w);
                    sums.iter_mut().zip(row).for_each(|(s, p)| *s += w * p);
                }
            }
        }
    }

    /// All metrics for the row weights `counts` (at least one non-zero), given the weighted
    /// column sums `column_sums[c] = Σ_i counts[i]·p_ic`.
    pub(crate) fn evaluate(
        &self,
        counts: &[u32],
        column_sums: &[f64],
        workspace: &mut EvalWorkspace,
    ) -> MetricValues {
        let row_sums = self.row_pass(counts, workspace);
        let total = row_sums.total;
        let (ece, mce, rmsce) = top_label_bins(&row_sums.bins, total);
        let ordered = self.ordered_pass(counts, workspace);
        MetricValues {
            accuracy: row_sums.correct / total,
            macro_f1: macro_f1(&workspace.f1_counts),
            nll: row_sums.nll / total,
            brier: row_sums.brier / total,
            ece_15_equal_width: ece,
            ece_10_equal_mass: ordered.equal_mass_gap_sum / total,
            classwise_ece: self.classwise_ece(counts, column_sums, total, workspace),
            mce,
            rmsce,
            smooth_ece: self.smooth.smooth_ece(counts, &mut workspace.smooth).value,
            auroc: ordered.auroc,
            aurc: ordered.aurc,
        }
    }

    /// One pass over the rows: totals, top-label bins, F1 counts, gold terms of classwise ECE.
    fn row_pass(&self, counts: &[u32], workspace: &mut EvalWorkspace) -> RowSums {
        let k = self.n_classes();
        workspace.f1_counts.clear();
        workspace.f1_counts.resize(k, [0.0; 3]);
        workspace.class_bins.clear();
        workspace.class_bins.resize(k * EQUAL_WIDTH_BINS, 0.0);
        let mut sums = RowSums::default();
        for (i, &w) in counts.iter().enumerate() {
            if w == 0 {
                continue;
            }
            let w = f64::from(w);
            let correct = self.correct[i];
            sums.total += w;
            sums.correct += w * correct;
            sums.nll += w * self.nll[i];
            sums.brier += w * self.brier[i];
            let bin = &mut sums.bins[usize::from(self.top_bin[i])];
            bin[0] += w;
            bin[1] += w * (self.confidence[i] - correct);
            let predicted = self.predicted[i] as usize;
            let gold = self.labels[i] as usize;
            workspace.f1_counts[predicted][0] += w * correct;
            workspace.f1_counts[predicted][1] += w;
            workspace.f1_counts[gold][2] += w;
            workspace.class_bins[gold * EQUAL_WIDTH_BINS + usize::from(self.gold_bin[i])] -= w;
        }
        sums
    }

    /// Class-wise ECE from the gold terms left by [`Self::row_pass`], the sparse probabilities
    /// and the column sums (bin 0 of class c = column sum − its sparse entries).
    fn classwise_ece(
        &self,
        counts: &[u32],
        column_sums: &[f64],
        total: f64,
        workspace: &mut EvalWorkspace,
    ) -> f64 {
        let k = self.n_classes();
        workspace.sparse_sums.clear();
        workspace.sparse_sums.resize(k, 0.0);
        for entry in &self.sparse {
            let w = counts[entry.row as usize];
            if w != 0 {
                let mass = f64::from(w) * entry.probability;
                let class = entry.class as usize;
                workspace.class_bins[class * EQUAL_WIDTH_BINS + usize::from(entry.bin)] += mass;
                workspace.sparse_sums[class] += mass;
            }
        }
        let mut gap_sum = 0.0;
        for (class, bins) in workspace.class_bins.chunks_exact(EQUAL_WIDTH_BINS).enumerate() {
            let bin0 = bins[0] + column_sums[class] - workspace.sparse_sums[class];
            gap_sum += bin0.abs() + bins[1..].iter().map(|s| s.abs()).sum::<f64>();
        }
        gap_sum / (total * k as f64)
    }

    /// One walk over the rows in confidence order: equal-mass ECE, AUROC and AURC.
    fn ordered_pass(&self, counts: &[u32], workspace: &mut EvalWorkspace) -> OrderedSums {
        let mut groups = std::mem::take(&mut workspace.groups);
        self.confidence_groups(counts, &mut groups);
        let total: f64 = groups.iter().map(|g| g.weight).sum();
        let total_count = total as u64;
        let mut equal_mass = [0.0; EQUAL_MASS_BINS];
        let (mut before, mut wrong_before, mut won_pairs) = (0.0, 0.0, 0.0);
        for group in &groups {
            let bin = equal_mass_bin(before as u64, total_count, EQUAL_MASS_BINS);
            equal_mass[bin] += group.weight * group.confidence - group.correct;
            let wrong = group.weight - group.correct;
            won_pairs += group.correct * (wrong_before + 0.5 * wrong);
            before += group.weight;
            wrong_before += wrong;
        }
        let correct_total = total - wrong_before;
        let auroc = if correct_total > 0.0 && wrong_before > 0.0 {
            won_pairs / (correct_total * wrong_before)
        } else {
            f64::NAN
        };
        let aurc = aurc(&groups, total, &mut workspace.harmonic);
        workspace.groups = groups;
        OrderedSums {
            equal_mass_gap_sum: equal_mass.iter().map(|s| s.abs()).sum(),
            auroc,
            aurc,
        }
    }

    /// Tie groups of equal confidence (ascending) with their weight and weighted correct count;
    /// groups of weight zero are dropped.
    fn confidence_groups(&self, counts: &[u32], groups: &mut Vec<Group>) {
        groups.clear();
        let (mut weight, mut correct) = (0u64, 0u64);
        for (&row, &ends) in self.ascending.iter().zip(&self.group_ends) {
            let row = row as usize;
            let w = u64::from(counts[row]);
            weight += w;
            correct += w * self.correct[row] as u64;
            if ends {
                if weight > 0 {
                    groups.push(Group {
                        confidence: self.confidence[row],
                        weight: weight as f64,
                        correct: correct as f64,
                    });
                }
                (weight, correct) = (0, 0);
            }
        }
    }
}

/// AURC from the ascending tie groups: walks them in descending order. Inside a group of `m`
/// rows with `e` errors after `k0` rows with `E` errors, position `j` has expected errors
/// `E + j·e/m`, so the group adds `Σ_{j=1..m} (E + j·e/m)/(k0 + j)`
/// `= E·ΔH + (e/m)·(m − k0·ΔH)` with `ΔH = Σ_{j=1..m} 1/(k0 + j)`.
fn aurc(groups: &[Group], total: f64, harmonic: &mut Vec<f64>) -> f64 {
    let (mut before, mut errors_before, mut risk_sum) = (0u64, 0.0, 0.0);
    for group in groups.iter().rev() {
        let m = group.weight as u64;
        let errors = group.weight - group.correct;
        let delta_h = harmonic_range(before, m, harmonic);
        risk_sum +=
            errors_before * delta_h + errors / group.weight * (group.weight - before as f64 * delta_h);
        before += m;
        errors_before += errors;
    }
    risk_sum / total
}

/// `Σ_{j=1..m} 1/(k0 + j)`: summed directly for short ranges (exact to rounding), from a table
/// of harmonic numbers for long ones (where the difference is large enough to be accurate).
fn harmonic_range(k0: u64, m: u64, table: &mut Vec<f64>) -> f64 {
    const DIRECT_UP_TO: u64 = 64;
    if m <= DIRECT_UP_TO {
        return (1..=m).map(|j| 1.0 / (k0 + j) as f64).sum();
    }
    let end = (k0 + m) as usize;
    if table.len() <= end {
        let start = table.len().max(1);
        table.resize(end + 1, 0.0);
        for n in start..=end {
            table[n] = table[n - 1] + 1.0 / n as f64;
        }
    }
    table[end] - table[k0 as usize]
}

/// Argmax with ties to the lowest index, and the maximum.
fn argmax(row: &[f64]) -> (usize, f64) {
    row.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) })
}

/// ECE, MCE and RMSCE from per-bin `[weight, Σ w·(conf − correct)]`.
fn top_label_bins(bins: &[[f64; 2]; EQUAL_WIDTH_BINS], total: f64) -> (f64, f64, f64) {
    let (mut ece, mut mce, mut squared) = (0.0, 0.0f64, 0.0);
    for &[weight, gap_sum] in bins.iter().filter(|b| b[0] > 0.0) {
        let gap = (gap_sum / weight).abs();
        ece += gap_sum.abs();
        mce = mce.max(gap);
        squared += weight * gap * gap;
    }
    (ece / total, mce, (squared / total).sqrt())
}

/// Macro-F1 from per-class `[true positives, predicted, gold]`, over classes that occur.
fn macro_f1(per_class: &[[f64; 3]]) -> f64 {
    let (sum, present) = per_class
        .iter()
        .filter(|[_, predicted, gold]| predicted + gold > 0.0)
        .fold((0.0, 0usize), |(sum, n), [tp, predicted, gold]| {
            (sum + 2.0 * tp / (predicted + gold), n + 1)
        });
    sum / present as f64
}

#[derive(Debug, Default)]
struct RowSums {
    total: f64,
    correct: f64,
    nll: f64,
    brier: f64,
    /// Per equal-width bin: `[weight, Σ w·(confidence − correct)]`.
    bins: [[f64; 2]; EQUAL_WIDTH_BINS],
}

#[derive(Debug)]
struct OrderedSums {
    equal_mass_gap_sum: f64,
    auroc: f64,
    aurc: f64,
}

#[derive(Debug, Clone, Copy)]
struct Group {
    confidence: f64,
    weight: f64,
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
    fn harmonic_range_direct_and_table_agree() {
        let mut table = Vec::new();
        for (k0, m) in [(0, 100), (10, 65), (1000, 500)] {
            let direct: f64 = (1..=m).map(|j| 1.0 / (k0 + j) as f64).sum();
            assert!((harmonic_range(k0, m, &mut table) - direct).abs() < 1e-12);
        }
    }

    #[test]
    fn argmax_ties_go_to_lowest_index() {
        assert_eq!(argmax(&[0.2, 0.4, 0.4]), (1, 0.4));
        assert_eq!(argmax(&[0.5, 0.5]), (0, 0.5));
    }
}
