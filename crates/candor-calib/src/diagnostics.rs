//! Degeneracy diagnostics of a signal: does it carry information at all?
//!
//! A small model asked to verbalize a distribution often writes the same answer for every
//! example (`1` for every label, or `0.1, 0.2, …` counting up). Its ECE can then look small —
//! confidence is constantly `1/K` and accuracy near chance — while the signal says nothing.
//! [`SignalDiagnostics`] counts what such a signal looks like: answers constant across labels,
//! answers identical to the most common answer, the mean entropy and the number of distinct
//! answers. [`SignalAgreement`] compares two signals on the same examples (verbalized against
//! token logits): the mean per-example Spearman rank correlation of the two distributions, and
//! how often their argmaxes agree (a tie over `k` labels counts as each with weight `1/k`).
//!
//! A signal is called **degenerate** when at least [`DEGENERATE_SHARE`] of its answers are
//! constant across labels, or at least that share are one and the same distribution.

use crate::error::{CalibError, Result};
use crate::matrix::ScoreMatrix;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The share of constant (or identical) answers from which a signal is degenerate.
pub const DEGENERATE_SHARE: f64 = 0.5;

/// What the answers of one signal look like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalDiagnostics {
    /// Answers examined.
    pub n: usize,
    /// Share of answers whose probabilities are equal across all labels (uniform).
    pub constant_share: f64,
    /// Share of answers identical to the most common answer.
    pub modal_share: f64,
    /// The most common answer.
    pub modal_answer: Vec<f64>,
    /// Mean Shannon entropy of the answers, in nats (`ln K` for uniform answers).
    pub mean_entropy: f64,
    /// Number of distinct answers.
    pub distinct_answers: usize,
    /// Whether the signal is degenerate (see the module documentation).
    pub degenerate: bool,
}

impl SignalDiagnostics {
    /// The diagnostics of probability rows (each a distribution); at least one row.
    pub fn of(probabilities: &ScoreMatrix) -> Result<Self> {
        let n = probabilities.n_rows();
        if n == 0 {
            return Err(CalibError::Empty("diagnostics of zero answers".into()));
        }
        let constant = probabilities.rows().filter(|row| row.iter().all(|&p| p == row[0])).count();
        let mut counts: HashMap<Vec<u64>, (usize, usize)> = HashMap::new();
        for (i, row) in probabilities.rows().enumerate() {
            counts.entry(row.iter().map(|p| p.to_bits()).collect()).or_insert((0, i)).0 += 1;
        }
        // The most common answer; among equally common ones, the first to occur.
        let (modal_count, modal_row) = counts
            .values()
            .copied()
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
            .unwrap_or((0, 0));
        let entropy: f64 = probabilities
            .rows()
            .map(|row| -row.iter().filter(|&&p| p > 0.0).map(|&p| p * p.ln()).sum::<f64>())
            .sum();
        let constant_share = constant as f64 / n as f64;
        let modal_share = modal_count as f64 / n as f64;
        Ok(Self {
            n,
            constant_share,
            modal_share,
            modal_answer: probabilities.row(modal_row).to_vec(),
            mean_entropy: entropy / n as f64,
            distinct_answers: counts.len(),
            degenerate: constant_share >= DEGENERATE_SHARE || modal_share >= DEGENERATE_SHARE,
        })
    }
}

/// How two signals relate on the same examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalAgreement {
    /// Examples compared.
    pub n: usize,
    /// Mean Spearman rank correlation of the two distributions of an example (average ranks
    /// for ties), over the examples where neither is constant; `None` when there are none.
    pub mean_rank_correlation: Option<f64>,
    /// Examples the rank correlation was defined on.
    pub rank_correlation_defined: usize,
    /// Share of examples whose argmaxes agree; with ties, the chance that one label drawn from
    /// each argmax set is the same.
    pub argmax_agreement: f64,
}

impl SignalAgreement {
    /// Compares `a` and `b` row by row (same shape, at least one row; scores of any kind whose
    /// order within a row matters, e.g. probabilities or logits).
    pub fn between(a: &ScoreMatrix, b: &ScoreMatrix) -> Result<Self> {
        if a.n_rows() != b.n_rows() || a.n_classes() != b.n_classes() {
            return Err(CalibError::Shape {
                what: "second signal (rows and labels must match the first)".into(),
                expected: a.n_rows() * a.n_classes(),
                found: b.n_rows() * b.n_classes(),
            });
        }
        if a.n_rows() == 0 {
            return Err(CalibError::Empty("agreement of zero examples".into()));
        }
        let correlations: Vec<f64> = a.rows().zip(b.rows()).filter_map(|(x, y)| spearman(x, y)).collect();
        let agreement: f64 = a.rows().zip(b.rows()).map(|(x, y)| argmax_overlap(x, y)).sum();
        Ok(Self {
            n: a.n_rows(),
            mean_rank_correlation: (!correlations.is_empty())
                .then(|| correlations.iter().sum::<f64>() / correlations.len() as f64),
            rank_correlation_defined: correlations.len(),
            argmax_agreement: agreement / a.n_rows() as f64,
        })
    }
}

/// Ranks 1..=n with ties given their average rank.
fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let end = (start..order.len()).find(|&e| values[order[e]] != values[order[start]]).unwrap_or(order.len());
        let rank = (start + end + 1) as f64 / 2.0;
        order[start..end].iter().for_each(|&i| ranks[i] = rank);
        start = end;
    }
    ranks
}

/// Spearman's ρ: the Pearson correlation of the average ranks; `None` when either side is
/// constant.
fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    let (rx, ry) = (average_ranks(x), average_ranks(y));
    let mean = (x.len() + 1) as f64 / 2.0;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        sxy += (a - mean) * (b - mean);
        sxx += (a - mean) * (a - mean);
        syy += (b - mean) * (b - mean);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// `|A ∩ B| / (|A|·|B|)` of the argmax sets `A`, `B`.
fn argmax_overlap(x: &[f64], y: &[f64]) -> f64 {
    let maxima = |row: &[f64]| {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (0..row.len()).filter(|&c| row[c] == max).collect::<Vec<_>>()
    };
    let (a, b) = (maxima(x), maxima(y));
    let common = a.iter().filter(|c| b.contains(c)).count();
    common as f64 / (a.len() * b.len()) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_answers_are_degenerate() {
        let flat = ScoreMatrix::from_rows(&vec![vec![0.25; 4]; 5]).unwrap();
        let d = SignalDiagnostics::of(&flat).unwrap();
        assert_eq!((d.constant_share, d.modal_share, d.distinct_answers), (1.0, 1.0, 1));
        assert!((d.mean_entropy - 4f64.ln()).abs() < 1e-15);
        assert!(d.degenerate);
        assert_eq!(d.modal_answer, vec![0.25; 4]);
    }

    #[test]
    fn hand_counted_mixture() {
        // 2 uniform, 2 identical "counting" answers, 1 other: neither share reaches 1/2.
        let rows = [
            vec![0.5, 0.5],
            vec![0.1, 0.9],
            vec![0.5, 0.5],
            vec![0.1, 0.9],
            vec![1.0, 0.0],
        ];
        let d = SignalDiagnostics::of(&ScoreMatrix::from_rows(&rows).unwrap()).unwrap();
        assert_eq!((d.constant_share, d.modal_share, d.distinct_answers), (0.4, 0.4, 3));
        // Equally common answers: the first to occur is the modal one.
        assert_eq!(d.modal_answer, vec![0.5, 0.5]);
        let h = |p: f64| -(p * p.ln() + (1.0 - p) * (1.0 - p).ln());
        assert!((d.mean_entropy - (2.0 * h(0.5) + 2.0 * h(0.1)) / 5.0).abs() < 1e-15);
        assert!(!d.degenerate);
    }

    #[test]
    fn agreement_hand_values() {
        let a = ScoreMatrix::from_rows(&[vec![0.7, 0.2, 0.1], vec![0.4, 0.4, 0.2], vec![1.0 / 3.0; 3]]).unwrap();
        let b = ScoreMatrix::from_rows(&[vec![-1.0, -2.0, -3.0], vec![-3.0, -1.0, -2.0], vec![-1.0, -2.0, -3.0]]).unwrap();
        let g = SignalAgreement::between(&a, &b).unwrap();
        // Row 0: same order, ρ = 1. Row 1: ranks (2.5, 2.5, 1) vs (1, 3, 2): centred (½, ½, −1)
        // and (−1, 1, 0): Σxy = 0, ρ = 0. Row 2: constant, undefined.
        assert_eq!(g.rank_correlation_defined, 2);
        assert!((g.mean_rank_correlation.unwrap() - 0.5).abs() < 1e-15);
        // Argmax: row 0 agree (1); row 1 {0, 1} vs {1}: 1/2; row 2 {0, 1, 2} vs {0}: 1/3.
        assert!((g.argmax_agreement - (1.0 + 0.5 + 1.0 / 3.0) / 3.0).abs() < 1e-15);
        assert!(SignalAgreement::between(&a, &ScoreMatrix::from_rows(&[vec![1.0, 0.0, 0.0]]).unwrap()).is_err());
    }
}
