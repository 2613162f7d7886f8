//! Precision–recall curves of a score against a binary truth, and decision thresholds that
//! reach a target precision (or recall), with bootstrap intervals for the chosen operating point.
//!
//! A threshold `τ` selects the rows with score `≥ τ`. The curve has one point per distinct score,
//! in decreasing threshold order: `precision = TP / selected`, `recall = TP / positives`. Curves
//! are available per class (one-vs-rest on `p_c`) and for top-label correctness (confidence as
//! the score, "argmax is gold" as the truth).
//!
//! [`PrCurve::threshold_for_precision`] returns, among the points with precision ≥ target, the one
//! with the most recall (on equal recall, the higher threshold); [`PrCurve::threshold_for_recall`]
//! returns, among the points with recall ≥ target, the one with the highest precision (on equal
//! precision, the lower threshold, i.e. more recall). The interval of an operating point comes
//! from [`bootstrap_operating_point`]: the threshold is held fixed and its precision and recall
//! are recomputed on seeded resamples (the same resampling as [`crate::bootstrap`]).

use crate::bootstrap::{percentile_interval, resample_counts, BootstrapOptions};
use crate::error::{CalibError, Result};
use crate::matrix::ScoreMatrix;
use crate::metrics::{check_scored_outcomes, top_label_pairs, validate_inputs, ScoreRange};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// One point of a precision–recall curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrPoint {
    /// Rows with score `≥ threshold` are selected.
    pub threshold: f64,
    /// True positives among the selected rows divided by the selected rows.
    pub precision: f64,
    /// True positives among the selected rows divided by all positives.
    pub recall: f64,
    /// Number of selected rows.
    pub selected: usize,
    /// Number of selected positives.
    pub true_positives: usize,
}

/// A precision–recall curve: one point per distinct score, thresholds decreasing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrCurve {
    /// Number of rows.
    pub n_rows: usize,
    /// Number of positive rows.
    pub positives: usize,
    /// The points, in decreasing threshold order.
    pub points: Vec<PrPoint>,
}

/// An operating point's precision and recall with bootstrap intervals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OperatingPointInterval {
    /// The (fixed) threshold.
    pub threshold: f64,
    /// Precision on the full data (NaN when nothing is selected).
    pub precision: f64,
    /// Recall on the full data.
    pub recall: f64,
    /// Percentile interval of the precision; `None` without defined resamples.
    pub precision_ci: Option<(f64, f64)>,
    /// Percentile interval of the recall; `None` without defined resamples.
    pub recall_ci: Option<(f64, f64)>,
    /// Resamples that selected at least one row (precision defined).
    pub precision_defined_resamples: usize,
    /// Resamples that contained at least one positive (recall defined).
    pub recall_defined_resamples: usize,
}

impl PrCurve {
    /// The point with the most recall among those with precision ≥ `target` (ties: the higher
    /// threshold); `None` when no threshold reaches the target.
    pub fn threshold_for_precision(&self, target: f64) -> Option<PrPoint> {
        self.points
            .iter()
            .filter(|p| p.precision >= target)
            .fold(None, |best: Option<PrPoint>, p| match best {
                Some(b) if b.recall >= p.recall => Some(b),
                _ => Some(*p),
            })
    }

    /// The point with the highest precision among those with recall ≥ `target` (ties: the lower
    /// threshold); `None` when no threshold reaches the target.
    pub fn threshold_for_recall(&self, target: f64) -> Option<PrPoint> {
        self.points
            .iter()
            .filter(|p| p.recall >= target)
            .fold(None, |best: Option<PrPoint>, p| match best {
                Some(b) if b.precision > p.precision => Some(b),
                _ => Some(*p),
            })
    }
}

/// The precision–recall curve of `scores` (finite) against `truth`; needs at least one positive.
pub fn precision_recall_curve(scores: &[f64], truth: &[bool]) -> Result<PrCurve> {
    check_scores(scores, truth)?;
    let positives = truth.iter().filter(|&&t| t).count();
    if positives == 0 {
        return Err(CalibError::NotApplicable(
            "a precision-recall curve needs at least one positive row".into(),
        ));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut points = Vec::new();
    let (mut selected, mut true_positives) = (0, 0);
    for (position, &i) in order.iter().enumerate() {
        selected += 1;
        true_positives += usize::from(truth[i]);
        let group_ends = order.get(position + 1).is_none_or(|&next| scores[next] != scores[i]);
        if group_ends {
            points.push(PrPoint {
                threshold: scores[i],
                precision: true_positives as f64 / selected as f64,
                recall: true_positives as f64 / positives as f64,
                selected,
                true_positives,
            });
        }
    }
    Ok(PrCurve { n_rows: scores.len(), positives, points })
}

/// One-vs-rest curves per class (score `p_c`, truth `gold = c`); `None` for a class that is
/// never the gold label.
pub fn per_class_curves(probs: &ScoreMatrix, labels: &[usize]) -> Result<Vec<Option<PrCurve>>> {
    validate_inputs(probs, labels)?;
    (0..probs.n_classes())
        .map(|class| {
            let truth: Vec<bool> = labels.iter().map(|&g| g == class).collect();
            if !truth.contains(&true) {
                return Ok(None);
            }
            let scores: Vec<f64> = probs.rows().map(|row| row[class]).collect();
            precision_recall_curve(&scores, &truth).map(Some)
        })
        .collect()
}

/// The curve of top-label confidence against correctness of the argmax (ties → lowest index).
pub fn top_label_curve(probs: &ScoreMatrix, labels: &[usize]) -> Result<PrCurve> {
    let (scores, truth) = top_label_pairs(probs, labels)?;
    precision_recall_curve(&scores, &truth)
}

/// Precision and recall at a fixed `threshold` with percentile-bootstrap intervals over
/// `options.resamples` seeded resamples of the rows.
pub fn bootstrap_operating_point(
    scores: &[f64],
    truth: &[bool],
    threshold: f64,
    options: &BootstrapOptions,
) -> Result<OperatingPointInterval> {
    check_scores(scores, truth)?;
    if u32::try_from(scores.len()).is_err() {
        return Err(CalibError::InvalidParameter {
            name: "scores",
            reason: format!("at most {} rows can be resampled", u32::MAX),
        });
    }
    options.validate()?;
    let ones = vec![1u32; scores.len()];
    let (precision, recall) = operating_point(scores, truth, threshold, &ones);
    let resampled: Vec<(f64, f64)> = (0..options.resamples as u64)
        .into_par_iter()
        .map(|b| {
            let counts = resample_counts(scores.len(), options.seed, b);
            operating_point(scores, truth, threshold, &counts)
        })
        .collect();
    let mut precisions: Vec<f64> = resampled.iter().map(|r| r.0).filter(|v| v.is_finite()).collect();
    let mut recalls: Vec<f64> = resampled.iter().map(|r| r.1).filter(|v| v.is_finite()).collect();
    Ok(OperatingPointInterval {
        threshold,
        precision,
        recall,
        precision_defined_resamples: precisions.len(),
        recall_defined_resamples: recalls.len(),
        precision_ci: percentile_interval(&mut precisions, options.level),
        recall_ci: percentile_interval(&mut recalls, options.level),
    })
}

/// Weighted precision and recall of selecting `score ≥ threshold` (NaN when undefined).
fn operating_point(scores: &[f64], truth: &[bool], threshold: f64, counts: &[u32]) -> (f64, f64) {
    let (mut selected, mut true_positives, mut positives) = (0u64, 0u64, 0u64);
    for ((&score, &positive), &w) in scores.iter().zip(truth).zip(counts) {
        let w = u64::from(w);
        let chosen = score >= threshold;
        selected += w * u64::from(chosen);
        true_positives += w * u64::from(chosen && positive);
        positives += w * u64::from(positive);
    }
    let ratio = |a: u64, b: u64| if b == 0 { f64::NAN } else { a as f64 / b as f64 };
    (ratio(true_positives, selected), ratio(true_positives, positives))
}

fn check_scores(scores: &[f64], truth: &[bool]) -> Result<()> {
    let empty = "thresholds need at least one score";
    check_scored_outcomes(scores, truth, empty, "truth values", ScoreRange::Finite)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_matches_hand_counts() {
        let scores = [0.9, 0.8, 0.8, 0.3];
        let truth = [true, false, true, true];
        let curve = precision_recall_curve(&scores, &truth).unwrap();
        let summary: Vec<_> =
            curve.points.iter().map(|p| (p.threshold, p.selected, p.true_positives)).collect();
        assert_eq!(summary, [(0.9, 1, 1), (0.8, 3, 2), (0.3, 4, 3)]);
        assert_eq!(curve.points[1].precision, 2.0 / 3.0);
        assert_eq!(curve.points[1].recall, 2.0 / 3.0);
        // precision ≥ 0.8: only τ = 0.9 (recall 1/3); precision ≥ 0.6: τ = 0.3 has 0.75.
        assert_eq!(curve.threshold_for_precision(0.8).unwrap().threshold, 0.9);
        assert_eq!(curve.threshold_for_precision(0.6).unwrap().threshold, 0.3);
        assert_eq!(curve.threshold_for_precision(1.01), None);
        // recall ≥ 0.5: τ = 0.8 (precision 2/3) or 0.3 (0.75) -> 0.3.
        assert_eq!(curve.threshold_for_recall(0.5).unwrap().threshold, 0.3);
    }

    #[test]
    fn bad_inputs_are_rejected() {
        assert!(precision_recall_curve(&[0.5], &[false]).is_err());
        assert!(precision_recall_curve(&[f64::NAN], &[true]).is_err());
        assert!(precision_recall_curve(&[0.5, 0.2], &[true]).is_err());
    }

    #[test]
    fn operating_point_interval_is_seeded_and_brackets_the_estimate() {
        let scores: Vec<f64> = (0..200).map(|i| f64::from(i) / 200.0).collect();
        let truth: Vec<bool> = (0..200).map(|i| i % 3 != 0 && i > 60).collect();
        let options = BootstrapOptions { resamples: 300, seed: 5, level: 0.9 };
        let a = bootstrap_operating_point(&scores, &truth, 0.5, &options).unwrap();
        let b = bootstrap_operating_point(&scores, &truth, 0.5, &options).unwrap();
        assert_eq!(a, b);
        let (low, high) = a.precision_ci.unwrap();
        assert!(low <= a.precision && a.precision <= high && low < high);
        assert_eq!(a.recall_defined_resamples, 300);
    }
}
