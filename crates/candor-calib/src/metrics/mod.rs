//! Accuracy and calibration metrics of a probability matrix against gold labels.
//!
//! Every metric has a fixed public name (used as a JSON key), listed by [`Metric`] in the order
//! of [`Metric::ALL`]. [`compute_all`] computes all of them in one pass; the
//! [`bootstrap`](crate::bootstrap) module evaluates the same code on resampling weights, so a
//! metric and its confidence interval can never disagree about a convention.
//!
//! # Conventions
//!
//! * Input rows are probability distributions: values in `[0, 1]` summing to 1 within
//!   [`PROBABILITY_TOLERANCE`].
//! * **Prediction, confidence and ties.** The (top-label) confidence is the row maximum; the
//!   prediction is the class holding it. When `k` classes share the maximum the row predicts
//!   each of them with weight `1/k`: its *correctness* is `1/k` when the gold label is among them
//!   and 0 otherwise (the expected correctness of a random tie-break), so a uniform row scores
//!   `1/K`, never "label 0". Every metric that uses correctness (accuracy, F1, the binned
//!   errors, smooth ECE, AUROC, AURC) uses this fractional value.
//! * `accuracy`: mean correctness.
//! * `macro_f1`: mean over classes of the F1 score of the argmax predictions (a tied row adds
//!   `1/k` of a prediction to each tied class, and `1/k` of a true positive to the gold one),
//!   over the classes that occur as a gold label or as a prediction at least once (classes with
//!   neither are excluded, as scikit-learn does when `labels` is not given; a class that is gold
//!   but never predicted, or predicted but never gold, counts with F1 = 0).
//! * `nll`: mean of `−ln max(p_y, ε)`, with ε of [`MetricOptions`] (default
//!   [`DEFAULT_EPSILON`](crate::softmax::DEFAULT_EPSILON) = 1e-6): the same ε invert softmax
//!   lifts zero probabilities to, so no signal and no calibrator is charged more than `−ln ε`
//!   for one example, and the uncalibrated verbalized signal and `ts` at T = 1 score alike.
//! * `brier`: multiclass Brier score, the **sum over classes** of `(p_c − y_c)²` averaged over
//!   rows (range `[0, 2]`; divide by the number of classes for the per-class mean convention).
//! * `ece_15_equal_width`: top-label ECE with 15 equal-width bins; bin `b` holds confidences in
//!   `[b/15, (b+1)/15)` (bin index `⌊15·c⌋` computed in `f64`), and a confidence of exactly 1.0
//!   goes to the last bin. ECE = `Σ_b (n_b/N)·|acc_b − conf_b|`.
//! * `mce`: max over non-empty equal-width bins of `|acc_b − conf_b|`.
//! * `rmsce`: `sqrt(Σ_b (n_b/N)·(acc_b − conf_b)²)` over the same 15 bins (the plug-in L2
//!   calibration error, biased upwards by the sampling noise of each bin's accuracy).
//! * `debiased_l2_ce`: the debiased L2 calibration error of Kumar, Liang & Ma (2019) over the
//!   same 15 bins: `sqrt(max(0, Σ_b (n_b/N)·[(acc_b − conf_b)² − acc_b(1 − acc_b)/(n_b − 1)]))`,
//!   bins with fewer than two rows contributing nothing. It can be 0 where the plug-in is not.
//! * `ece_10_equal_mass`: top-label ECE with 10 equal-count bins. Rows are ordered by confidence;
//!   bin `b` nominally holds ordered positions `[⌊bN/10⌋, ⌊(b+1)N/10⌋)`. Rows with equal
//!   confidence are **kept together**: a group of tied rows goes wholly to the bin in which its
//!   first position falls. Heavily tied inputs therefore give fewer, unequal bins, and the value
//!   never depends on the order of tied rows.
//! * `classwise_ece`: for each class `c`, the ECE (15 equal-width bins) of `p_c` against the
//!   indicator `y = c`; averaged over all classes.
//! * `smooth_ece`: smooth ECE of the top-label confidence (Błasiok & Nakkiran 2023), see
//!   [`smooth_ece`](fn@smooth_ece) for the kernel, grid and bandwidth rules.
//! * `auroc`: area under the ROC curve of the confidence as a score for "prediction correct",
//!   with ties counted ½ (Mann–Whitney). **NaN** when all rows are correct or all are wrong.
//! * `aurc`: area under the risk–coverage curve: rows sorted by confidence, descending; the risk
//!   at coverage `k` is the error rate among the `k` most confident rows, and AURC is the mean of
//!   the risk over `k = 1..N`. Within a group of tied confidences the order is undefined, so the
//!   errors of the group are spread evenly over its positions (the average over all orders of the
//!   tied rows).

mod prepared;
mod smooth;

pub(crate) use prepared::{equal_mass_bin, equal_width_bin, EvalWorkspace, PreparedMetrics};
pub use smooth::{smooth_ece, smooth_ece_at_bandwidth, SmoothEce, SMOOTH_ECE_MIN_BANDWIDTH};

use crate::error::{CalibError, Result};
use crate::matrix::ScoreMatrix;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How far a row sum may be from 1 for the row to count as a probability distribution.
pub const PROBABILITY_TOLERANCE: f64 = 1e-6;

/// What the metrics are computed with: ε (the floor of `p_y` in `nll`) and which metrics are
/// wanted (the others may be skipped and then read NaN; only `smooth_ece` and `classwise_ece`
/// cost enough to be worth skipping).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricOptions {
    /// ε in `(0, 1)`: `nll` takes `−ln max(p_y, ε)`.
    pub epsilon: f64,
    /// The metrics wanted; `None`: all of them.
    pub wanted: Option<Vec<Metric>>,
}

impl Default for MetricOptions {
    fn default() -> Self {
        Self { epsilon: crate::softmax::DEFAULT_EPSILON, wanted: None }
    }
}

impl MetricOptions {
    /// All metrics with `epsilon`.
    pub fn with_epsilon(epsilon: f64) -> Self {
        Self { epsilon, wanted: None }
    }

    /// Whether `metric` is wanted.
    pub fn wants(&self, metric: Metric) -> bool {
        self.wanted.as_ref().is_none_or(|wanted| wanted.contains(&metric))
    }

    /// The wanted metrics, in the public order.
    pub fn metrics(&self) -> Vec<Metric> {
        Metric::ALL.into_iter().filter(|&m| self.wants(m)).collect()
    }

    pub(crate) fn validate(&self) -> Result<()> {
        crate::softmax::check_epsilon(self.epsilon)?;
        if self.wanted.as_ref().is_some_and(Vec::is_empty) {
            return Err(CalibError::InvalidParameter { name: "metrics", reason: "at least one metric is needed".into() });
        }
        Ok(())
    }
}

/// Number of equal-width bins of `ece_15_equal_width`, `mce`, `rmsce` and `classwise_ece`.
pub const EQUAL_WIDTH_BINS: usize = 15;

/// Number of equal-mass bins of `ece_10_equal_mass`.
pub const EQUAL_MASS_BINS: usize = 10;

/// One of the thirteen metrics, in the public order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Fraction of rows whose argmax equals the gold label.
    Accuracy,
    /// Macro-averaged F1 of the argmax predictions.
    MacroF1,
    /// Mean negative log-likelihood of the gold label.
    Nll,
    /// Multiclass Brier score (sum over classes).
    Brier,
    /// Top-label ECE, 15 equal-width bins.
    #[serde(rename = "ece_15_equal_width")]
    Ece15EqualWidth,
    /// Top-label ECE, 10 equal-mass bins.
    #[serde(rename = "ece_10_equal_mass")]
    Ece10EqualMass,
    /// Class-wise ECE, 15 equal-width bins per class, averaged over classes.
    ClasswiseEce,
    /// Maximum calibration error over the 15 equal-width bins.
    Mce,
    /// Root-mean-square calibration error over the 15 equal-width bins.
    Rmsce,
    /// Debiased L2 calibration error (Kumar et al. 2019) over the 15 equal-width bins.
    DebiasedL2Ce,
    /// Smooth ECE with the automatic bandwidth.
    SmoothEce,
    /// AUROC of confidence for correctness.
    Auroc,
    /// Area under the risk–coverage curve.
    Aurc,
}

impl Metric {
    /// All metrics, in the public order.
    pub const ALL: [Metric; 13] = [
        Metric::Accuracy,
        Metric::MacroF1,
        Metric::Nll,
        Metric::Brier,
        Metric::Ece15EqualWidth,
        Metric::Ece10EqualMass,
        Metric::ClasswiseEce,
        Metric::Mce,
        Metric::Rmsce,
        Metric::DebiasedL2Ce,
        Metric::SmoothEce,
        Metric::Auroc,
        Metric::Aurc,
    ];

    /// The public name (JSON key) of the metric.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::MacroF1 => "macro_f1",
            Metric::Nll => "nll",
            Metric::Brier => "brier",
            Metric::Ece15EqualWidth => "ece_15_equal_width",
            Metric::Ece10EqualMass => "ece_10_equal_mass",
            Metric::ClasswiseEce => "classwise_ece",
            Metric::Mce => "mce",
            Metric::Rmsce => "rmsce",
            Metric::DebiasedL2Ce => "debiased_l2_ce",
            Metric::SmoothEce => "smooth_ece",
            Metric::Auroc => "auroc",
            Metric::Aurc => "aurc",
        }
    }

    /// Whether a larger value is better (accuracy, macro-F1, AUROC); all others are errors.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::Accuracy | Metric::MacroF1 | Metric::Auroc)
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Metric {
    type Err = CalibError;

    fn from_str(s: &str) -> Result<Self> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| CalibError::InvalidParameter {
                name: "metric",
                reason: format!(
                    "unknown metric {s:?}; expected one of {}",
                    Metric::ALL.map(Metric::name).join(", ")
                ),
            })
    }
}

/// The value of every metric; field names are the public metric names.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricValues {
    /// See [`Metric::Accuracy`].
    pub accuracy: f64,
    /// See [`Metric::MacroF1`].
    pub macro_f1: f64,
    /// See [`Metric::Nll`].
    pub nll: f64,
    /// See [`Metric::Brier`].
    pub brier: f64,
    /// See [`Metric::Ece15EqualWidth`].
    pub ece_15_equal_width: f64,
    /// See [`Metric::Ece10EqualMass`].
    pub ece_10_equal_mass: f64,
    /// See [`Metric::ClasswiseEce`].
    pub classwise_ece: f64,
    /// See [`Metric::Mce`].
    pub mce: f64,
    /// See [`Metric::Rmsce`].
    pub rmsce: f64,
    /// See [`Metric::DebiasedL2Ce`].
    pub debiased_l2_ce: f64,
    /// See [`Metric::SmoothEce`].
    pub smooth_ece: f64,
    /// See [`Metric::Auroc`]; NaN when all rows are correct or all are wrong.
    pub auroc: f64,
    /// See [`Metric::Aurc`].
    pub aurc: f64,
}

impl MetricValues {
    /// The value of one metric.
    pub fn get(&self, metric: Metric) -> f64 {
        match metric {
            Metric::Accuracy => self.accuracy,
            Metric::MacroF1 => self.macro_f1,
            Metric::Nll => self.nll,
            Metric::Brier => self.brier,
            Metric::Ece15EqualWidth => self.ece_15_equal_width,
            Metric::Ece10EqualMass => self.ece_10_equal_mass,
            Metric::ClasswiseEce => self.classwise_ece,
            Metric::Mce => self.mce,
            Metric::Rmsce => self.rmsce,
            Metric::DebiasedL2Ce => self.debiased_l2_ce,
            Metric::SmoothEce => self.smooth_ece,
            Metric::Auroc => self.auroc,
            Metric::Aurc => self.aurc,
        }
    }

    /// `(metric, value)` pairs in the public order.
    pub fn iter(&self) -> impl Iterator<Item = (Metric, f64)> + '_ {
        Metric::ALL.into_iter().map(|m| (m, self.get(m)))
    }
}

/// The values a score paired with a binary outcome may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScoreRange {
    /// A probability in `[0, 1]`.
    Probability,
    /// Any finite number.
    Finite,
}

/// Checks scores paired with binary outcomes: at least one (`empty` is the error message
/// otherwise), one outcome per score (`outcome_name` names them in the error), every score in
/// `range`.
pub(crate) fn check_scored_outcomes(
    scores: &[f64],
    outcomes: &[bool],
    empty: &str,
    outcome_name: &str,
    range: ScoreRange,
) -> Result<()> {
    if scores.is_empty() {
        return Err(CalibError::Empty(empty.into()));
    }
    if scores.len() != outcomes.len() {
        return Err(CalibError::Shape {
            what: format!("{outcome_name} (one per score)"),
            expected: scores.len(),
            found: outcomes.len(),
        });
    }
    let (allowed, expected): (fn(&f64) -> bool, _) = match range {
        ScoreRange::Probability => (|s| (0.0..=1.0).contains(s), "a score in [0, 1]"),
        ScoreRange::Finite => (|s| s.is_finite(), "a finite score"),
    };
    match scores.iter().position(|s| !allowed(s)) {
        Some(row) => Err(CalibError::InvalidValue { row, column: 0, value: scores[row], expected }),
        None => Ok(()),
    }
}

/// Checks that `probs` holds probability rows and `labels` one valid class index per row.
pub fn validate_inputs(probs: &ScoreMatrix, labels: &[usize]) -> Result<()> {
    if probs.n_rows() == 0 {
        return Err(CalibError::Empty("metrics need at least one row".into()));
    }
    probs.check_labels(labels)?;
    probs.check_probabilities(PROBABILITY_TOLERANCE)
}

/// Top-label `(confidence, correct)` of every row, as two vectors, for the binary-outcome
/// tools (reliability diagrams, decision thresholds). A binary outcome has no `1/k`, so a row
/// whose maximum is shared by several classes counts as *not* correct here: it made no
/// prediction (it is never taken as a prediction of the first label).
pub fn top_label_pairs(probs: &ScoreMatrix, labels: &[usize]) -> Result<(Vec<f64>, Vec<bool>)> {
    validate_inputs(probs, labels)?;
    Ok(probs
        .rows()
        .zip(labels)
        .map(|(row, &gold)| {
            let confidence = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let tied = row.iter().filter(|&&p| p == confidence).count();
            (confidence, tied == 1 && row[gold] == confidence)
        })
        .unzip())
}

/// Computes every metric of `probs` (rows are distributions) against gold `labels`, with the
/// default [`MetricOptions`].
pub fn compute_all(probs: &ScoreMatrix, labels: &[usize]) -> Result<MetricValues> {
    compute_all_with(probs, labels, &MetricOptions::default())
}

/// Computes the metrics of `probs` against `labels` with `options` (unwanted costly metrics
/// read NaN).
pub fn compute_all_with(probs: &ScoreMatrix, labels: &[usize], options: &MetricOptions) -> Result<MetricValues> {
    let prepared = PreparedMetrics::new(probs, labels, options)?;
    Ok(prepared.evaluate_unweighted(&mut EvalWorkspace::default()))
}

/// Computes one metric (all are computed internally; use [`compute_all`] for several).
pub fn compute(metric: Metric, probs: &ScoreMatrix, labels: &[usize]) -> Result<f64> {
    compute_all(probs, labels).map(|v| v.get(metric))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_in_public_order() {
        let names: Vec<_> = Metric::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(
            names,
            [
                "accuracy",
                "macro_f1",
                "nll",
                "brier",
                "ece_15_equal_width",
                "ece_10_equal_mass",
                "classwise_ece",
                "mce",
                "rmsce",
                "debiased_l2_ce",
                "smooth_ece",
                "auroc",
                "aurc"
            ]
        );
        for m in Metric::ALL {
            assert_eq!(m.name().parse::<Metric>().unwrap(), m);
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{}\"", m.name()));
        }
        assert!("ece".parse::<Metric>().is_err());
    }

    #[test]
    fn json_keys_are_the_metric_names() {
        let values = MetricValues {
            accuracy: 0.0,
            macro_f1: 1.0,
            nll: 2.0,
            brier: 3.0,
            ece_15_equal_width: 4.0,
            ece_10_equal_mass: 5.0,
            classwise_ece: 6.0,
            mce: 7.0,
            rmsce: 8.0,
            debiased_l2_ce: 9.0,
            smooth_ece: 10.0,
            auroc: 11.0,
            aurc: 12.0,
        };
        let json = serde_json::to_value(values).unwrap();
        for (i, (m, v)) in values.iter().enumerate() {
            assert_eq!(v, i as f64);
            assert_eq!(json[m.name()], serde_json::json!(i as f64));
        }
    }

    /// Four rows, two classes, hand-computed values for every binned metric.
    #[test]
    fn hand_computed_small_case() {
        let probs = ScoreMatrix::from_rows(&[
            vec![0.9, 0.1], // pred 0, gold 0, correct, conf 0.9
            vec![0.8, 0.2], // pred 0, gold 1, wrong, conf 0.8
            vec![0.3, 0.7], // pred 1, gold 1, correct, conf 0.7
            vec![0.5, 0.5], // 2-way tie, gold 1 among the tied: correctness 1/2, conf 0.5
        ])
        .unwrap();
        let labels = [0, 1, 1, 1];
        let v = compute_all(&probs, &labels).unwrap();
        assert!((v.accuracy - 2.5 / 4.0).abs() < 1e-15);
        // class 0: tp 1, predicted 2.5, gold 1 -> F1 = 2/3.5; class 1: tp 1.5, predicted 1.5,
        // gold 3 -> 3/4.5.
        assert!((v.macro_f1 - (2.0 / 3.5 + 3.0 / 4.5) / 2.0).abs() < 1e-15);
        let nll = -(0.9f64.ln() + 0.2f64.ln() + 0.7f64.ln() + 0.5f64.ln()) / 4.0;
        assert!((v.nll - nll).abs() < 1e-15);
        let brier = (2.0 * 0.01 + 2.0 * 0.64 + 2.0 * 0.09 + 2.0 * 0.25) / 4.0;
        assert!((v.brier - brier).abs() < 1e-15);
        // 15 bins: 0.9 -> bin 13, 0.8 -> bin 12, 0.7 -> bin 10, 0.5 -> bin 7; one row each.
        let gaps = [0.1, 0.8, 0.3, 0.0];
        assert!((v.ece_15_equal_width - gaps.iter().sum::<f64>() / 4.0).abs() < 1e-15);
        assert!((v.mce - 0.8).abs() < 1e-15);
        let rms = (gaps.iter().map(|g| g * g).sum::<f64>() / 4.0).sqrt();
        assert!((v.rmsce - rms).abs() < 1e-15);
        // Every bin holds one row: no bin can be debiased, so the estimate is 0.
        assert_eq!(v.debiased_l2_ce, 0.0);
        // 10 equal-mass bins over 4 rows: cut points 0,0,0,1,1,2,2,2,3,3; each row alone.
        assert!((v.ece_10_equal_mass - v.ece_15_equal_width).abs() < 1e-15);
        // AUROC: correct mass {0.9: 1, 0.7: 1, 0.5: 1/2}, wrong {0.8: 1, 0.5: 1/2}: pairs won
        // 0.9 beats 0.8 and 0.5 (1 + 1/2), 0.7 beats 0.5 (1/2), the tied row's halves tie (1/8);
        // of 2.5 · 1.5 pairs.
        assert!((v.auroc - (1.5 + 0.5 + 0.125) / 3.75).abs() < 1e-15);
        // AURC: order 0.9(ok) 0.8(err) 0.7(ok) 0.5(half): risks 0, 1/2, 1/3, 1.5/4.
        assert!((v.aurc - (0.0 + 0.5 + 1.0 / 3.0 + 1.5 / 4.0) / 4.0).abs() < 1e-15);
        // Classwise, class 0: p0 = .9,.8,.3,.5 with y0 = 1,0,0,0 -> bins 13,12,4,7 alone:
        // gaps .1,.8,.3,.5. Class 1: p1 = .1,.2,.7,.5, y1 = 0,1,1,1 -> bins 1,3,10,7: .1,.8,.3,.5.
        assert!((v.classwise_ece - 1.7 / 4.0).abs() < 1e-15);
    }

    #[test]
    fn confidence_one_lands_in_last_bin_and_zero_probability_is_floored() {
        let probs = ScoreMatrix::from_rows(&[vec![1.0, 0.0], vec![0.0, 1.0]]).unwrap();
        let v = compute_all(&probs, &[0, 0]).unwrap();
        // Row 0: conf 1, correct (gap 0); row 1: conf 1, wrong (gap 1); same last bin.
        assert!((v.ece_15_equal_width - 0.5).abs() < 1e-15);
        assert!((v.mce - 0.5).abs() < 1e-15);
        let epsilon = crate::softmax::DEFAULT_EPSILON;
        assert!((v.nll - (-(epsilon.ln())) / 2.0).abs() < 1e-12);
        assert!((v.brier - 1.0).abs() < 1e-15);
        // One correct and one wrong at the same confidence: AUROC 1/2.
        assert!((v.auroc - 0.5).abs() < 1e-15);
    }

    #[test]
    fn a_three_way_tie_counts_one_third() {
        // Row 0: a 3-way tie holding the gold label; row 1: uniform over 4 with gold 3 (never
        // "label 0"); row 2: a tie without the gold label.
        let probs = ScoreMatrix::from_rows(&[
            vec![0.3, 0.3, 0.3, 0.1],
            vec![0.25, 0.25, 0.25, 0.25],
            vec![0.4, 0.4, 0.1, 0.1],
        ])
        .unwrap();
        let v = compute_all(&probs, &[2, 3, 3]).unwrap();
        assert!((v.accuracy - (1.0 / 3.0 + 0.25 + 0.0) / 3.0).abs() < 1e-15);
        // Per class [tp, predicted, gold]: 0: [0, 1/3+1/4+1/2, 0], 1: the same, 2: [1/3, 1/3+1/4, 1],
        // 3: [1/4, 1/4, 2].
        let f1 = |tp: f64, predicted: f64, gold: f64| 2.0 * tp / (predicted + gold);
        let expected = (0.0 + 0.0 + f1(1.0 / 3.0, 7.0 / 12.0, 1.0) + f1(0.25, 0.25, 2.0)) / 4.0;
        assert!((v.macro_f1 - expected).abs() < 1e-15, "{} vs {expected}", v.macro_f1);
        let (_, correct) = top_label_pairs(&probs, &[2, 3, 3]).unwrap();
        assert_eq!(correct, [false, false, false]);
    }

    #[test]
    fn auroc_is_nan_when_undefined_and_inputs_are_checked() {
        let probs = ScoreMatrix::from_rows(&[vec![0.9, 0.1], vec![0.6, 0.4]]).unwrap();
        assert!(compute_all(&probs, &[0, 0]).unwrap().auroc.is_nan());
        assert!(compute_all(&probs, &[0]).is_err());
        assert!(compute_all(&probs, &[0, 2]).is_err());
        let bad = ScoreMatrix::from_rows(&[vec![0.9, 0.3]]).unwrap();
        assert!(compute_all(&bad, &[0]).is_err());
        let empty = ScoreMatrix::new(2, vec![]).unwrap();
        assert!(matches!(compute_all(&empty, &[]), Err(CalibError::Empty(_))));
    }
}
