//! One-vs-rest histogram binning: for each class, the probability axis `[0, 1]` is cut into equal-
//! width bins, and a probability is replaced by the frequency of that class among the calibration
//! rows whose probability for it fell in the same bin.
//!
//! Bin `j` of `B` holds `[j/B, (j+1)/B)`; a probability of exactly 1 lands in the last bin. A bin
//! that received no calibration rows maps to its centre `(j + ½)/B` (there is no evidence to move
//! it). The per-class values are renormalised per row; a row whose values are all 0 (every class
//! fell into a bin where it never occurred) keeps its input probabilities.

use super::{map_rows, renormalise_or_restore};
use crate::error::{CalibError, Result};
use crate::matrix::ScoreMatrix;
use serde::{Deserialize, Serialize};

/// Fitted histogram-binning parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramParams {
    /// Number of equal-width bins on `[0, 1]`.
    pub bins: usize,
    /// `values[k][j]`: the calibrated probability of class `k` for bin `j`.
    pub values: Vec<Vec<f64>>,
    /// `counts[k][j]`: calibration rows whose probability of class `k` fell in bin `j`.
    pub counts: Vec<Vec<usize>>,
}

/// The bin of probability `p` among `bins` equal-width bins (`p = 1` → last bin).
pub(super) fn bin_index(p: f64, bins: usize) -> usize {
    ((p.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1)
}

impl HistogramParams {
    /// Calibrated probabilities from input probabilities with `n_classes` columns.
    pub(super) fn apply(
        &self,
        probabilities: &ScoreMatrix,
        n_classes: usize,
    ) -> Result<ScoreMatrix> {
        if self.bins == 0
            || self.values.len() != n_classes
            || self.values.iter().any(|v| v.len() != self.bins)
        {
            return Err(CalibError::Shape {
                what: "histogram values (classes × bins)".into(),
                expected: n_classes * self.bins,
                found: self.values.iter().map(Vec::len).sum(),
            });
        }
        map_rows(probabilities, |row| {
            let input = row.to_vec();
            for (p, class_values) in row.iter_mut().zip(&self.values) {
                *p = class_values[bin_index(*p, self.bins)];
            }
            renormalise_or_restore(row, &input);
        })
    }
}

/// Fits the bins on probabilities (validated, at least one row) with `bins ≥ 1`.
pub(super) fn fit(probabilities: &ScoreMatrix, labels: &[usize], bins: usize) -> HistogramParams {
    let k = probabilities.n_classes();
    let mut counts = vec![vec![0usize; bins]; k];
    let mut hits = vec![vec![0usize; bins]; k];
    for (row, &y) in probabilities.rows().zip(labels) {
        for (class, &p) in row.iter().enumerate() {
            let j = bin_index(p, bins);
            counts[class][j] += 1;
            if class == y {
                hits[class][j] += 1;
            }
        }
    }
    let values = counts
        .iter()
        .zip(&hits)
        .map(|(class_counts, class_hits)| {
            class_counts
                .iter()
                .zip(class_hits)
                .enumerate()
                .map(|(j, (&n, &h))| {
                    if n == 0 {
                        (j as f64 + 0.5) / bins as f64
                    } else {
                        h as f64 / n as f64
                    }
                })
                .collect()
        })
        .collect();
    HistogramParams {
        bins,
        values,
        counts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bin_edges() {
        assert_eq!(bin_index(0.0, 15), 0);
        assert_eq!(bin_index(1.0 / 15.0, 15), 1);
        assert_eq!(bin_index(0.999, 15), 14);
        assert_eq!(bin_index(1.0, 15), 14);
        assert_eq!(bin_index(0.5, 2), 1);
    }

    #[test]
    fn hand_fitted_bins() {
        // Two bins: [0, 0.5) and [0.5, 1]. Rows (p0, p1) and labels:
        //   (0.8, 0.2) y=0, (0.7, 0.3) y=1, (0.9, 0.1) y=0, (0.6, 0.4) y=0
        // Class 0: all four in bin 1, three are class 0 → 3/4; bin 0 empty → centre 1/4.
        // Class 1: all four in bin 0, one is class 1 → 1/4; bin 1 empty → centre 3/4.
        let p = ScoreMatrix::from_rows(&[
            vec![0.8, 0.2],
            vec![0.7, 0.3],
            vec![0.9, 0.1],
            vec![0.6, 0.4],
        ])
        .unwrap();
        let params = fit(&p, &[0, 1, 0, 0], 2);
        assert_eq!(params.values, vec![vec![0.25, 0.75], vec![0.25, 0.75]]);
        assert_eq!(params.counts, vec![vec![0, 4], vec![4, 0]]);
        // A new row (0.55, 0.45) → (3/4, 1/4), already normalised.
        let new = ScoreMatrix::from_rows(&[vec![0.55, 0.45], vec![0.2, 0.8]]).unwrap();
        let out = params.apply(&new, 2).unwrap();
        assert_eq!(out.row(0), &[0.75, 0.25]);
        // (0.2, 0.8) → (1/4, 3/4) from the empty-bin centres.
        assert_eq!(out.row(1), &[0.25, 0.75]);
    }

    #[test]
    fn all_zero_rows_keep_their_input() {
        // Each class occurs only when its probability is in bin 1 ([0.5, 1]): bin 0 maps to 0.
        let p = ScoreMatrix::from_rows(&[
            vec![0.8, 0.1, 0.1],
            vec![0.1, 0.8, 0.1],
            vec![0.1, 0.1, 0.8],
        ])
        .unwrap();
        let params = fit(&p, &[0, 1, 2], 2);
        assert_eq!(params.values, vec![vec![0.0, 1.0]; 3]);
        // A flat row has every class in bin 0 → all zeros → the input row is kept.
        let new = ScoreMatrix::from_rows(&[vec![0.4, 0.3, 0.3], vec![0.6, 0.2, 0.2]]).unwrap();
        let out = params.apply(&new, 3).unwrap();
        assert_eq!(out.row(0), &[0.4, 0.3, 0.3]);
        assert_eq!(out.row(1), &[1.0, 0.0, 0.0]);
    }
}
