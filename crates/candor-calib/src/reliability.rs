//! Reliability-diagram data: per bin, how many rows fall in it, their mean score, the observed
//! frequency of the outcome (accuracy, for top-label diagrams) and a Wilson interval for that
//! frequency. Plain serde structs; drawing them is the CLI's business.
//!
//! Bins follow the metric conventions of [`crate::metrics`]: equal-width bins are
//! `[b/n, (b+1)/n)` with a score of exactly 1.0 in the last bin; equal-mass bins order the rows by
//! score and keep tied scores together (a tie group goes to the bin of its first position).
//! Empty bins are reported with count 0 and no statistics; nothing is invented for them.
//!
//! The interval is the Wilson score interval: with `p̂ = s/n` and `z` the standard-normal
//! quantile at `(1 + level)/2`, `(p̂ + z²/2n ± z·sqrt(p̂(1 − p̂)/n + z²/4n²)) / (1 + z²/n)`.
//! Unlike the normal approximation it stays inside `[0, 1]` and is sensible for small bins.

use crate::error::{CalibError, Result};
use crate::matrix::ScoreMatrix;
use crate::metrics::{
    check_scored_outcomes, equal_mass_bin, equal_width_bin, top_label_pairs, validate_inputs,
    ScoreRange, EQUAL_MASS_BINS, EQUAL_WIDTH_BINS,
};
use serde::{Deserialize, Serialize};

/// How scores are grouped into bins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "bins")]
pub enum Binning {
    /// This many equal-width bins on `[0, 1]`.
    EqualWidth(usize),
    /// This many bins of (as near as ties allow) equal count.
    EqualMass(usize),
}

/// Options of a reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityOptions {
    /// The binning (default: 15 equal-width bins).
    pub binning: Binning,
    /// Confidence level of the per-bin Wilson intervals (default 0.95).
    pub level: f64,
}

impl Default for ReliabilityOptions {
    fn default() -> Self {
        Self {
            binning: Binning::EqualWidth(EQUAL_WIDTH_BINS),
            level: 0.95,
        }
    }
}

impl ReliabilityOptions {
    /// Ten equal-mass bins, the binning of `ece_10_equal_mass`.
    pub fn equal_mass() -> Self {
        Self {
            binning: Binning::EqualMass(EQUAL_MASS_BINS),
            ..Self::default()
        }
    }
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    /// Lower edge: the bin's nominal edge for equal-width bins, the smallest member score for
    /// equal-mass bins (`None` for an empty equal-mass bin).
    pub lower: Option<f64>,
    /// Upper edge: the nominal (exclusive, except 1.0) edge for equal-width bins, the largest
    /// member score for equal-mass bins.
    pub upper: Option<f64>,
    /// Number of rows in the bin.
    pub count: usize,
    /// Mean score of the rows (`None` when empty).
    pub mean_confidence: Option<f64>,
    /// Observed frequency of the outcome (`None` when empty).
    pub accuracy: Option<f64>,
    /// Lower bound of the Wilson interval of `accuracy`.
    pub ci_low: Option<f64>,
    /// Upper bound of the Wilson interval of `accuracy`.
    pub ci_high: Option<f64>,
}

/// The bins of one reliability diagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityDiagram {
    /// The class of a per-class diagram; `None` for top-label.
    pub class: Option<usize>,
    /// The binning used.
    pub binning: Binning,
    /// Confidence level of the intervals.
    pub level: f64,
    /// Number of rows.
    pub n_rows: usize,
    /// The bins, in increasing score order (empty bins included).
    pub bins: Vec<ReliabilityBin>,
}

/// Reliability diagram of arbitrary scores in `[0, 1]` against binary outcomes.
pub fn reliability_diagram(
    scores: &[f64],
    outcomes: &[bool],
    options: &ReliabilityOptions,
) -> Result<ReliabilityDiagram> {
    check_options(options)?;
    check_scores(scores, outcomes)?;
    let (n_bins, assignment) = match options.binning {
        Binning::EqualWidth(n) => (n, scores.iter().map(|&s| equal_width_bin(s, n)).collect::<Vec<_>>()),
        Binning::EqualMass(n) => (n, equal_mass_assignment(scores, n)),
    };
    let z = normal_quantile((1.0 + options.level) / 2.0);
    let mut members = vec![Vec::new(); n_bins];
    for (i, &bin) in assignment.iter().enumerate() {
        members[bin].push(i);
    }
    let bins = members
        .iter()
        .enumerate()
        .map(|(b, rows)| summarise_bin(b, n_bins, options.binning, rows, scores, outcomes, z))
        .collect();
    Ok(ReliabilityDiagram {
        class: None,
        binning: options.binning,
        level: options.level,
        n_rows: scores.len(),
        bins,
    })
}

/// Top-label reliability diagram: confidence (row maximum) against correctness of the argmax.
pub fn top_label_reliability(
    probs: &ScoreMatrix,
    labels: &[usize],
    options: &ReliabilityOptions,
) -> Result<ReliabilityDiagram> {
    let (scores, outcomes) = top_label_pairs(probs, labels)?;
    reliability_diagram(&scores, &outcomes, options)
}

/// One reliability diagram per class `c`: `p_c` against the indicator `gold = c`.
pub fn per_class_reliability(
    probs: &ScoreMatrix,
    labels: &[usize],
    options: &ReliabilityOptions,
) -> Result<Vec<ReliabilityDiagram>> {
    validate_inputs(probs, labels)?;
    (0..probs.n_classes())
        .map(|class| {
            let scores: Vec<f64> = probs.rows().map(|row| row[class]).collect();
            let outcomes: Vec<bool> = labels.iter().map(|&g| g == class).collect();
            let mut diagram = reliability_diagram(&scores, &outcomes, options)?;
            diagram.class = Some(class);
            Ok(diagram)
        })
        .collect()
}

/// The Wilson score interval for `successes` out of `n` at `level`; `None` when `n` is 0.
pub fn wilson_interval(successes: usize, n: usize, level: f64) -> Option<(f64, f64)> {
    (n > 0).then(|| wilson_with_z(successes, n, normal_quantile((1.0 + level) / 2.0)))
}

fn wilson_with_z(successes: usize, n: usize, z: f64) -> (f64, f64) {
    let n_f = n as f64;
    let p = successes as f64 / n_f;
    let z2 = z * z;
    let denominator = 1.0 + z2 / n_f;
    let centre = (p + z2 / (2.0 * n_f)) / denominator;
    let half = z / denominator * (p * (1.0 - p) / n_f + z2 / (4.0 * n_f * n_f)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// The standard-normal quantile function for `p` in `(0, 1)`: Acklam's rational approximation
/// (relative error below 1.2e-9, ample for interval bounds).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const P_LOW: f64 = 0.024_25;
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < P_LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p <= 1.0 - P_LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    }
}

/// Equal-mass bin of every score: ordered by score, tie groups kept together.
fn equal_mass_assignment(scores: &[f64], n_bins: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    let mut assignment = vec![0; scores.len()];
    let mut group_start = 0;
    for (position, &i) in order.iter().enumerate() {
        if position > 0 && scores[order[position - 1]] != scores[i] {
            group_start = position;
        }
        assignment[i] = equal_mass_bin(group_start as u64, scores.len() as u64, n_bins);
    }
    assignment
}

fn summarise_bin(
    bin: usize,
    n_bins: usize,
    binning: Binning,
    members: &[usize],
    scores: &[f64],
    outcomes: &[bool],
    z: f64,
) -> ReliabilityBin {
    let count = members.len();
    let member_scores = || members.iter().map(|&i| scores[i]);
    let (lower, upper) = match binning {
        Binning::EqualWidth(_) => (
            Some(bin as f64 / n_bins as f64),
            Some((bin + 1) as f64 / n_bins as f64),
        ),
        Binning::EqualMass(_) if count == 0 => (None, None),
        Binning::EqualMass(_) => (
            member_scores().reduce(f64::min),
            member_scores().reduce(f64::max),
        ),
    };
    let successes = members.iter().filter(|&&i| outcomes[i]).count();
    let interval = (count > 0).then(|| wilson_with_z(successes, count, z));
    ReliabilityBin {
        lower,
        upper,
        count,
        mean_confidence: (count > 0).then(|| member_scores().sum::<f64>() / count as f64),
        accuracy: (count > 0).then(|| successes as f64 / count as f64),
        ci_low: interval.map(|i| i.0),
        ci_high: interval.map(|i| i.1),
    }
}

fn check_options(options: &ReliabilityOptions) -> Result<()> {
    let (Binning::EqualWidth(n) | Binning::EqualMass(n)) = options.binning;
    if n == 0 {
        return Err(CalibError::InvalidParameter {
            name: "binning",
            reason: "needs at least one bin".into(),
        });
    }
    if !(options.level > 0.0 && options.level < 1.0) {
        return Err(CalibError::InvalidParameter {
            name: "level",
            reason: format!("must be in (0, 1), got {}", options.level),
        });
    }
    Ok(())
}

fn check_scores(scores: &[f64], outcomes: &[bool]) -> Result<()> {
    let empty = "a reliability diagram needs at least one score";
    check_scored_outcomes(scores, outcomes, empty, "outcomes", ScoreRange::Probability)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_quantile_matches_tabulated_values() {
        assert!((normal_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-8);
        assert!((normal_quantile(0.5)).abs() < 1e-12);
        assert!((normal_quantile(0.995) - 2.575_829_303_548_901).abs() < 1e-8);
        assert!((normal_quantile(0.001) + 3.090_232_306_167_813).abs() < 1e-8);
    }

    #[test]
    fn wilson_interval_matches_hand_computation() {
        // 8 of 10 at 95%: centre (0.8 + z²/20)/(1 + z²/10), z = 1.959964.
        let z: f64 = 1.959_963_984_540_054;
        let centre = (0.8 + z * z / 20.0) / (1.0 + z * z / 10.0);
        let half = z / (1.0 + z * z / 10.0) * (0.16 / 10.0 + z * z / 400.0).sqrt();
        let (low, high) = wilson_interval(8, 10, 0.95).unwrap();
        assert!((low - (centre - half)).abs() < 1e-8 && (high - (centre + half)).abs() < 1e-8);
        assert!((low - 0.490_162).abs() < 1e-5, "{low}"); // published value 0.4902
        assert_eq!(wilson_interval(0, 0, 0.95), None);
        let (low, _) = wilson_interval(0, 5, 0.95).unwrap();
        assert_eq!(low, 0.0);
    }

    #[test]
    fn equal_width_bins_report_empty_bins_and_the_last_edge() {
        let scores = [0.05, 0.07, 1.0, 0.95];
        let outcomes = [true, false, true, true];
        let d = reliability_diagram(&scores, &outcomes, &ReliabilityOptions::default()).unwrap();
        assert_eq!(d.bins.len(), 15);
        assert_eq!(d.bins.iter().map(|b| b.count).collect::<Vec<_>>()[..2], [1, 1]);
        assert_eq!(d.bins[14].count, 2);
        assert_eq!(d.bins[14].mean_confidence, Some(0.975));
        assert_eq!(d.bins[14].accuracy, Some(1.0));
        let empty = &d.bins[5];
        assert_eq!((empty.count, empty.accuracy, empty.ci_low), (0, None, None));
        assert_eq!((empty.lower, empty.upper), (Some(5.0 / 15.0), Some(6.0 / 15.0)));
    }

    #[test]
    fn equal_mass_bins_keep_ties_and_use_member_edges() {
        let scores = [0.2, 0.2, 0.2, 0.4, 0.9];
        let outcomes = [false, true, false, true, true];
        let options = ReliabilityOptions {
            binning: Binning::EqualMass(2),
            level: 0.9,
        };
        let d = reliability_diagram(&scores, &outcomes, &options).unwrap();
        // Cut points ⌊5b/2⌋ = 0, 2: the 0.2-group (positions 0..3) stays in bin 0.
        assert_eq!(d.bins[0].count, 3);
        assert_eq!(d.bins[1].count, 2);
        assert_eq!((d.bins[1].lower, d.bins[1].upper), (Some(0.4), Some(0.9)));
        assert!((d.bins[0].accuracy.unwrap() - 1.0 / 3.0).abs() < 1e-15);
    }

    #[test]
    fn per_class_and_top_label_views() {
        let probs =
            ScoreMatrix::from_rows(&[vec![0.7, 0.3], vec![0.4, 0.6], vec![0.5, 0.5]]).unwrap();
        let labels = [0, 0, 1];
        let top = top_label_reliability(&probs, &labels, &ReliabilityOptions::default()).unwrap();
        // confidences 0.7 (ok), 0.6 (wrong), 0.5 (tie -> class 0, wrong)
        assert_eq!(top.bins[10].count, 1); // 0.7 -> ⌊10.5⌋
        assert_eq!(top.bins[9].accuracy, Some(0.0)); // 0.6 -> ⌊9.0⌋
        let per_class = per_class_reliability(&probs, &labels, &ReliabilityOptions::default()).unwrap();
        assert_eq!(per_class.len(), 2);
        assert_eq!(per_class[1].class, Some(1));
        assert_eq!(per_class[1].bins[4].accuracy, Some(0.0)); // p1 = 0.3, gold 0
        assert!(reliability_diagram(&[0.5], &[true], &ReliabilityOptions { level: 1.0, ..Default::default() }).is_err());
        assert!(reliability_diagram(&[1.5], &[true], &ReliabilityOptions::default()).is_err());
    }
}
