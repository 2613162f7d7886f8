//! Properties of the calibrators through the public API: valid output rows for every kind on
//! random data, argmax preservation of temperature scaling, closed-form behaviour at T = 1,
//! parameter recovery of vector scaling, Platt against a brute-force search, serde round trips
//! and the errors for bad input.

use candor_calib::softmax::DEFAULT_EPSILON;
use candor_calib::calibrators::{mean_nll, CalibratorParams};
use candor_calib::softmax::softmax;
use candor_calib::{
    fit, kinds_for, CalibError, CalibratorKind, FitOptions, FittedCalibrator, InputKind,
    ScoreMatrix,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn argmax(row: &[f64]) -> usize {
    row.iter()
        .enumerate()
        .fold(0, |best, (i, &v)| if v > row[best] { i } else { best })
}

/// Draws a class from a distribution.
fn draw(p: &[f64], rng: &mut ChaCha8Rng) -> usize {
    let u: f64 = rng.random();
    let mut acc = 0.0;
    p.iter()
        .position(|&pk| {
            acc += pk;
            u < acc
        })
        .unwrap_or(p.len() - 1)
}

/// A calibrator built from JSON, the way a saved one is loaded.
fn from_json(
    kind: &str,
    input_kind: &str,
    n_classes: usize,
    epsilon: Option<f64>,
    params: serde_json::Value,
) -> FittedCalibrator {
    serde_json::from_value(serde_json::json!({
        "kind": kind,
        "input_kind": input_kind,
        "provenance": {
            "n_rows": 1, "n_classes": n_classes, "epsilon": epsilon,
            "class_counts": vec![0; n_classes], "nll_before": 0.0, "nll_after": 0.0
        },
        "params": params,
    }))
    .unwrap()
}

fn check_rows(out: &ScoreMatrix, what: &str) {
    for (i, row) in out.rows().enumerate() {
        assert!(
            row.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)),
            "{what} row {i}: {row:?}"
        );
        assert!(
            (row.iter().sum::<f64>() - 1.0).abs() <= 1e-9,
            "{what} row {i} sums to {}",
            row.iter().sum::<f64>()
        );
    }
}

/// Random score matrices: logits in ±`scale`, or probability rows (some with exact zeros).
fn scores_and_labels() -> impl Strategy<Value = (ScoreMatrix, ScoreMatrix, Vec<usize>)> {
    (2usize..8, 1usize..50, any::<u64>()).prop_map(|(k, n, seed)| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let scale = [0.1, 3.0, 30.0][rng.random_range(0..3)];
        let logits: Vec<f64> = (0..n * k)
            .map(|_| rng.random_range(-scale..scale))
            .collect();
        let logits = ScoreMatrix::new(k, logits).unwrap();
        let mut probabilities = logits.clone();
        probabilities.rows_mut().for_each(|row| {
            if rng.random_bool(0.3) {
                // A verbalized-style row: one class gets exactly zero.
                row[rng.random_range(0..k)] = f64::NEG_INFINITY;
            }
            let p = softmax(row);
            row.copy_from_slice(&p);
        });
        let labels = (0..n).map(|_| rng.random_range(0..k)).collect();
        (logits, probabilities, labels)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn every_calibrator_returns_distributions((logits, probabilities, labels) in scores_and_labels()) {
        for (input_kind, scores) in [(InputKind::Logits, &logits), (InputKind::Probabilities, &probabilities)] {
            for kind in kinds_for(input_kind) {
                let fitted = fit(kind, input_kind, scores, &labels, &FitOptions::default()).unwrap();
                let out = fitted.apply(scores).unwrap();
                check_rows(&out, &format!("{kind} on {input_kind}"));
                prop_assert!(fitted.provenance().nll_after.is_finite());
                if matches!(kind, CalibratorKind::Ts | CalibratorKind::ResoftmaxTs) {
                    for (before, after) in scores.rows().zip(out.rows()) {
                        let top = argmax(before);
                        let best = after.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        prop_assert!(after[top] >= best - 1e-12, "{kind}: argmax moved: {before:?} → {after:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn invert_softmax_ts_at_t_one_is_renormalisation_with_epsilon_lifting() {
    let epsilon = 1e-3;
    let ts = from_json(
        "ts",
        "probabilities",
        3,
        Some(epsilon),
        serde_json::json!({"method": "temperature", "temperature": 1.0, "at_bound": false, "iterations": 0}),
    );
    let p = ScoreMatrix::from_rows(&[
        vec![0.7, 0.3, 0.0],
        vec![0.5, 0.5, 0.0],
        vec![1.0, 0.0, 0.0],
    ])
    .unwrap();
    let out = ts.apply(&p).unwrap();
    for (row, calibrated) in p.rows().zip(out.rows()) {
        let lifted: Vec<f64> = row.iter().map(|v| v.max(epsilon)).collect();
        let sum: f64 = lifted.iter().sum();
        for (a, b) in calibrated.iter().zip(&lifted) {
            assert!(
                (a - b / sum).abs() < 1e-15,
                "{calibrated:?} vs {lifted:?}/{sum}"
            );
        }
    }
}

#[test]
fn resoftmax_at_t_one_caps_the_top_probability() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for k in 2..10 {
        let control = from_json(
            "resoftmax_ts",
            "probabilities",
            k,
            None,
            serde_json::json!({"method": "temperature", "temperature": 1.0, "at_bound": false, "iterations": 0}),
        );
        let mut rows: Vec<Vec<f64>> = (0..200)
            .map(|_| {
                softmax(
                    &(0..k)
                        .map(|_| rng.random_range(-20.0..20.0))
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        let mut one_hot = vec![0.0; k];
        one_hot[0] = 1.0;
        rows.push(one_hot);
        let out = control
            .apply(&ScoreMatrix::from_rows(&rows).unwrap())
            .unwrap();
        let bound = std::f64::consts::E / (std::f64::consts::E + (k - 1) as f64);
        let top = out
            .rows()
            .map(|r| r.iter().copied().fold(0.0, f64::max))
            .fold(0.0, f64::max);
        assert!(top <= bound + 1e-15, "K={k}: {top} > {bound}");
        // The one-hot row attains the bound exactly.
        assert!((top - bound).abs() < 1e-15);
    }
}

#[test]
fn ts_fits_the_temperature_that_generated_the_labels() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (n, k, t_true) = (20_000, 6, 2.5);
    let logits: Vec<f64> = (0..n * k).map(|_| rng.random_range(-5.0..5.0)).collect();
    let logits = ScoreMatrix::new(k, logits).unwrap();
    let labels: Vec<usize> = logits
        .rows()
        .map(|row| {
            draw(
                &softmax(&row.iter().map(|z| z / t_true).collect::<Vec<_>>()),
                &mut rng,
            )
        })
        .collect();
    let fitted = fit(
        CalibratorKind::Ts,
        InputKind::Logits,
        &logits,
        &labels,
        &FitOptions::default(),
    )
    .unwrap();
    let t = fitted.params()["temperature"].as_f64().unwrap();
    assert!((t - t_true).abs() < 0.1, "T = {t}");
    let provenance = fitted.provenance();
    assert!(provenance.nll_after < provenance.nll_before);
    assert_eq!(provenance.class_counts.iter().sum::<usize>(), n);
    assert_eq!(provenance.epsilon, Some(DEFAULT_EPSILON));
}

#[test]
fn vector_scaling_recovers_parameters_and_beats_ts() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (n, k) = (20_000, 4);
    let (w_true, b_true) = ([0.5, 1.5, 1.0, 2.0], [0.3, -0.2, 0.0, 0.1]);
    let logits: Vec<f64> = (0..n * k).map(|_| rng.random_range(-3.0..3.0)).collect();
    let logits = ScoreMatrix::new(k, logits).unwrap();
    let labels: Vec<usize> = logits
        .rows()
        .map(|z| {
            draw(
                &softmax(
                    &(0..k)
                        .map(|c| w_true[c] * z[c] + b_true[c])
                        .collect::<Vec<_>>(),
                ),
                &mut rng,
            )
        })
        .collect();
    let options = FitOptions::default();
    let vector = fit(
        CalibratorKind::Vector,
        InputKind::Logits,
        &logits,
        &labels,
        &options,
    )
    .unwrap();
    let ts = fit(
        CalibratorKind::Ts,
        InputKind::Logits,
        &logits,
        &labels,
        &options,
    )
    .unwrap();
    let CalibratorParams::Vector(params) = vector.parameters() else {
        panic!("vector params")
    };
    assert!(params.converged);
    for (w, truth) in params.weights.iter().zip(w_true) {
        assert!((w - truth).abs() < 0.1, "w = {:?}", params.weights);
    }
    // Biases are identified up to a common shift.
    let centre = |b: &[f64]| b.iter().sum::<f64>() / b.len() as f64;
    let (fitted_centre, true_centre) = (centre(&params.biases), centre(&b_true));
    for (b, truth) in params.biases.iter().zip(b_true) {
        assert!(
            ((b - fitted_centre) - (truth - true_centre)).abs() < 0.1,
            "b = {:?}",
            params.biases
        );
    }
    assert!(vector.provenance().nll_after <= ts.provenance().nll_after + 1e-12);
}

#[test]
fn vector_scaling_is_never_worse_than_ts_on_probabilities() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let rows: Vec<Vec<f64>> = (0..500)
        .map(|_| {
            softmax(
                &(0..5)
                    .map(|_| rng.random_range(-4.0..4.0))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let labels: Vec<usize> = (0..500).map(|_| rng.random_range(0..5)).collect();
    let p = ScoreMatrix::from_rows(&rows).unwrap();
    let options = FitOptions::default();
    let vector = fit(
        CalibratorKind::Vector,
        InputKind::Probabilities,
        &p,
        &labels,
        &options,
    )
    .unwrap();
    let ts = fit(
        CalibratorKind::Ts,
        InputKind::Probabilities,
        &p,
        &labels,
        &options,
    )
    .unwrap();
    assert!(vector.provenance().nll_after <= ts.provenance().nll_after + 1e-12);
    assert_eq!(vector.provenance().epsilon, Some(options.epsilon));
}

/// Mean smoothed binary cross-entropy of σ(a s + b), written out directly.
fn platt_loss(s: &[f64], positive: &[bool], a: f64, b: f64) -> f64 {
    let n_pos = positive.iter().filter(|&&p| p).count() as f64;
    let n_neg = positive.len() as f64 - n_pos;
    let (t_pos, t_neg) = ((n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0));
    s.iter()
        .zip(positive)
        .map(|(&s, &p)| {
            let q = 1.0 / (1.0 + (-(a * s + b)).exp());
            let t = if p { t_pos } else { t_neg };
            -(t * q.ln() + (1.0 - t) * (1.0 - q).ln())
        })
        .sum::<f64>()
        / s.len() as f64
}

#[test]
fn binary_platt_matches_a_brute_force_search() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let rows: Vec<Vec<f64>> = (0..300)
        .map(|_| vec![0.0, rng.random_range(-3.0..3.0)])
        .collect();
    // Labels from σ(0.6 s − 0.4): the fitted map should be near it, and optimal.
    let labels: Vec<usize> = rows
        .iter()
        .map(|r| usize::from(rng.random::<f64>() < 1.0 / (1.0 + (-(0.6 * r[1] - 0.4)).exp())))
        .collect();
    let logits = ScoreMatrix::from_rows(&rows).unwrap();
    let fitted = fit(
        CalibratorKind::Platt,
        InputKind::Logits,
        &logits,
        &labels,
        &FitOptions::default(),
    )
    .unwrap();
    let map = &fitted.params()["maps"][0];
    let (a, b) = (map["a"].as_f64().unwrap(), map["b"].as_f64().unwrap());
    let s: Vec<f64> = rows.iter().map(|r| r[1]).collect();
    let positive: Vec<bool> = labels.iter().map(|&y| y == 1).collect();
    // Coarse grid, then a fine grid around the best point.
    let search = |centre: (f64, f64), half: f64, steps: i32| {
        let mut best = (f64::INFINITY, 0.0, 0.0);
        for i in -steps..=steps {
            for j in -steps..=steps {
                let (ga, gb) = (
                    centre.0 + half * i as f64 / steps as f64,
                    centre.1 + half * j as f64 / steps as f64,
                );
                let loss = platt_loss(&s, &positive, ga, gb);
                if loss < best.0 {
                    best = (loss, ga, gb);
                }
            }
        }
        best
    };
    let coarse = search((0.0, 0.0), 3.0, 60);
    let fine = search((coarse.1, coarse.2), 0.05, 100);
    assert!(platt_loss(&s, &positive, a, b) <= fine.0 + 1e-12);
    assert!(
        (a - fine.1).abs() < 1e-3 && (b - fine.2).abs() < 1e-3,
        "({a}, {b}) vs grid ({}, {})",
        fine.1,
        fine.2
    );
    // The output is [1 − q, q] with q = σ(a s + b).
    let out = fitted.apply(&logits).unwrap();
    for (row, si) in out.rows().zip(&s) {
        let q = 1.0 / (1.0 + (-(a * si + b)).exp());
        assert!((row[1] - q).abs() < 1e-12 && (row[0] - (1.0 - q)).abs() < 1e-12);
    }
}

#[test]
fn one_vs_rest_platt_renormalises_per_class_maps() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let rows: Vec<Vec<f64>> = (0..200)
        .map(|_| {
            softmax(
                &(0..3)
                    .map(|_| rng.random_range(-2.0..2.0))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let labels: Vec<usize> = rows.iter().map(|p| draw(p, &mut rng)).collect();
    let p = ScoreMatrix::from_rows(&rows).unwrap();
    let fitted = fit(
        CalibratorKind::Platt,
        InputKind::Probabilities,
        &p,
        &labels,
        &FitOptions::default(),
    )
    .unwrap();
    let maps = fitted.params()["maps"].as_array().unwrap().clone();
    assert_eq!(maps.len(), 3);
    let out = fitted.apply(&p).unwrap();
    for (row, calibrated) in rows.iter().zip(out.rows()) {
        let q: Vec<f64> = (0..3)
            .map(|c| {
                let s = (row[c] / (1.0 - row[c])).ln();
                let (a, b) = (
                    maps[c]["a"].as_f64().unwrap(),
                    maps[c]["b"].as_f64().unwrap(),
                );
                1.0 / (1.0 + (-(a * s + b)).exp())
            })
            .collect();
        let sum: f64 = q.iter().sum();
        for (x, y) in calibrated.iter().zip(&q) {
            assert!((x - y / sum).abs() < 1e-12);
        }
    }
}

#[test]
fn every_fitted_calibrator_round_trips_through_json() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let rows: Vec<Vec<f64>> = (0..300)
        .map(|_| {
            softmax(
                &(0..4)
                    .map(|_| rng.random_range(-3.0..3.0))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let labels: Vec<usize> = rows.iter().map(|p| draw(p, &mut rng)).collect();
    let probabilities = ScoreMatrix::from_rows(&rows).unwrap();
    let logits = ScoreMatrix::from_rows(
        &rows
            .iter()
            .map(|p| p.iter().map(|v| v.ln()).collect::<Vec<_>>())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    for (input_kind, scores) in [
        (InputKind::Logits, &logits),
        (InputKind::Probabilities, &probabilities),
    ] {
        for kind in kinds_for(input_kind) {
            let fitted = fit(kind, input_kind, scores, &labels, &FitOptions::default()).unwrap();
            let json = serde_json::to_string(&fitted).unwrap();
            let back: FittedCalibrator = serde_json::from_str(&json).unwrap();
            assert_eq!(back.kind(), kind);
            assert_eq!(back.input_kind(), input_kind);
            assert_eq!(back.provenance().n_rows, 300);
            let (a, b) = (fitted.apply(scores).unwrap(), back.apply(scores).unwrap());
            assert!(
                a.values()
                    .iter()
                    .zip(b.values())
                    .all(|(x, y)| (x - y).abs() <= 1e-12),
                "{kind} on {input_kind}"
            );
            let nll = mean_nll(&b, &labels, DEFAULT_EPSILON).unwrap();
            assert!((nll - fitted.provenance().nll_after).abs() < 1e-12);
        }
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let options = FitOptions::default();
    let p = ScoreMatrix::from_rows(&[vec![0.6, 0.4], vec![0.3, 0.7]]).unwrap();
    let empty = ScoreMatrix::new(2, vec![]).unwrap();
    for kind in CalibratorKind::ALL {
        assert!(matches!(
            fit(kind, InputKind::Probabilities, &empty, &[], &options),
            Err(CalibError::Empty(_))
        ));
        assert!(matches!(
            fit(kind, InputKind::Probabilities, &p, &[0, 2], &options),
            Err(CalibError::LabelOutOfRange {
                row: 1,
                label: 2,
                n_classes: 2
            })
        ));
        assert!(matches!(
            fit(kind, InputKind::Probabilities, &p, &[0], &options),
            Err(CalibError::Shape { .. })
        ));
        let nan = ScoreMatrix::from_rows(&[vec![0.6, 0.4], vec![f64::NAN, 0.7]]).unwrap();
        assert!(matches!(
            fit(kind, InputKind::Logits, &nan, &[0, 1], &options),
            Err(CalibError::InvalidValue {
                row: 1,
                column: 0,
                ..
            }) | Err(CalibError::NotApplicable(_))
        ));
        let outside = ScoreMatrix::from_rows(&[vec![1.5, -0.5], vec![0.3, 0.7]]).unwrap();
        assert!(matches!(
            fit(kind, InputKind::Probabilities, &outside, &[0, 1], &options),
            Err(CalibError::InvalidValue {
                row: 0,
                column: 0,
                ..
            })
        ));
        let unnormalised = ScoreMatrix::from_rows(&[vec![0.5, 0.2]]).unwrap();
        assert!(fit(
            kind,
            InputKind::Probabilities,
            &unnormalised,
            &[0],
            &options
        )
        .is_err());
    }
    assert!(matches!(
        fit(
            CalibratorKind::ResoftmaxTs,
            InputKind::Logits,
            &p,
            &[0, 1],
            &options
        ),
        Err(CalibError::NotApplicable(_))
    ));
    let bad_options = FitOptions {
        epsilon: 0.0,
        ..FitOptions::default()
    };
    assert!(fit(
        CalibratorKind::Ts,
        InputKind::Probabilities,
        &p,
        &[0, 1],
        &bad_options
    )
    .is_err());
    let fitted = fit(
        CalibratorKind::Ts,
        InputKind::Probabilities,
        &p,
        &[0, 1],
        &options,
    )
    .unwrap();
    let three = ScoreMatrix::from_rows(&[vec![0.2, 0.3, 0.5]]).unwrap();
    assert!(matches!(
        fitted.apply(&three),
        Err(CalibError::Shape {
            expected: 2,
            found: 3,
            ..
        })
    ));
    // A hand-edited calibrator with the wrong number of weights is rejected at apply time.
    let broken = from_json(
        "vector",
        "logits",
        2,
        None,
        serde_json::json!({"method": "vector", "weights": [1.0], "biases": [0.0, 0.0], "iterations": 0, "converged": true}),
    );
    assert!(matches!(broken.apply(&p), Err(CalibError::Shape { .. })));
}
