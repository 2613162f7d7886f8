//! Threshold selection against brute force over every candidate threshold, and the per-class /
//! top-label views against direct construction.

use candor_calib::thresholds::{per_class_curves, precision_recall_curve, top_label_curve};
use candor_calib::ScoreMatrix;
use proptest::prelude::*;

/// Precision and recall of selecting `score ≥ t`, counted directly.
fn direct(scores: &[f64], truth: &[bool], t: f64) -> (f64, f64) {
    let selected = scores.iter().filter(|&&s| s >= t).count() as f64;
    let tp = scores.iter().zip(truth).filter(|(&s, &y)| s >= t && y).count() as f64;
    let positives = truth.iter().filter(|&&y| y).count() as f64;
    (tp / selected, tp / positives)
}

/// Brute force: every distinct score as a threshold; pick by the documented rules.
fn brute_force(scores: &[f64], truth: &[bool], target: f64, by_precision: bool) -> Option<f64> {
    let mut candidates: Vec<f64> = scores.to_vec();
    candidates.sort_by(|a, b| b.total_cmp(a));
    candidates.dedup();
    let mut best: Option<(f64, f64, f64)> = None; // (threshold, precision, recall)
    for t in candidates {
        let (p, r) = direct(scores, truth, t);
        let feasible = if by_precision { p >= target } else { r >= target };
        if !feasible {
            continue;
        }
        best = match best {
            None => Some((t, p, r)),
            // Thresholds decrease: on a tie keep the earlier (higher) one for the precision
            // rule, take the later (lower) one for the recall rule.
            Some(b) if by_precision => Some(if r > b.2 { (t, p, r) } else { b }),
            Some(b) => Some(if p >= b.1 { (t, p, r) } else { b }),
        };
    }
    best.map(|b| b.0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn chosen_thresholds_match_brute_force(
        raw in prop::collection::vec((0u8..12, any::<bool>()), 1..60),
        target in 0.0f64..1.0,
    ) {
        let scores: Vec<f64> = raw.iter().map(|r| f64::from(r.0) / 11.0).collect();
        let truth: Vec<bool> = raw.iter().map(|r| r.1).collect();
        prop_assume!(truth.contains(&true));
        let curve = precision_recall_curve(&scores, &truth).unwrap();
        for point in &curve.points {
            let (p, r) = direct(&scores, &truth, point.threshold);
            prop_assert!((p - point.precision).abs() < 1e-12 && (r - point.recall).abs() < 1e-12);
        }
        prop_assert_eq!(
            curve.threshold_for_precision(target).map(|p| p.threshold),
            brute_force(&scores, &truth, target, true)
        );
        prop_assert_eq!(
            curve.threshold_for_recall(target).map(|p| p.threshold),
            brute_force(&scores, &truth, target, false)
        );
    }
}

#[test]
fn per_class_and_top_label_curves_use_the_right_scores() {
    let probs = ScoreMatrix::from_rows(&[
        vec![0.6, 0.3, 0.1],
        vec![0.2, 0.7, 0.1],
        vec![0.5, 0.5, 0.0],
        vec![0.1, 0.2, 0.7],
    ])
    .unwrap();
    let labels = [0, 1, 1, 0];
    let curves = per_class_curves(&probs, &labels).unwrap();
    assert!(curves[2].is_none()); // class 2 is never gold
    let class1 = curves[1].as_ref().unwrap();
    let expected = precision_recall_curve(&[0.3, 0.7, 0.5, 0.2], &[false, true, true, false]).unwrap();
    assert_eq!(class1, &expected);
    // Top label: confidences 0.6 (ok), 0.7 (ok), 0.5 (argmax 0, wrong), 0.7 (argmax 2, wrong).
    let top = top_label_curve(&probs, &labels).unwrap();
    let expected = precision_recall_curve(&[0.6, 0.7, 0.5, 0.7], &[true, true, false, false]).unwrap();
    assert_eq!(top, expected);
}
