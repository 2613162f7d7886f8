//! A small, hand-written [`CalibrationResults`] for the report tests: two signals, a label and a
//! model name that need escaping, an undefined metric, an unreachable threshold, reliability
//! diagrams with known non-empty bins, a degenerate verbalized signal whose `resoftmax_ts`
//! stopped at the upper temperature bound, an ε sweep and the signals' agreement.

use candor_results::{
    CalibrateSettings, CalibrationResults, CalibratorResults, Difference, Estimate, FitStatus, RunSummary,
    SignalAgreement, SignalComparison, SignalDiagnostics, SignalResults, SweepPoint, ThresholdResult, WellFormedness,
};
use candor_calib::metrics::Metric;
use candor_calib::reliability::{Binning, ReliabilityBin, ReliabilityDiagram};
use serde_json::json;
use std::collections::BTreeMap;

/// A label that must be escaped in HTML.
pub const AWKWARD_LABEL: &str = "a<b&\"c\"";

/// One non-empty bin: (index of 15 equal-width bins, count, mean confidence, accuracy, ci low, ci high).
pub type BinSpec = (usize, usize, f64, f64, f64, f64);

/// Non-empty bins of verbalized under `none`.
pub const VERBALIZED_NONE_BINS: [BinSpec; 2] = [(9, 4, 0.62, 0.5, 0.15, 0.85), (14, 26, 0.95, 0.7, 0.5, 0.85)];
/// Non-empty bins of logits under `none`.
pub const LOGITS_NONE_BINS: [BinSpec; 3] =
    [(3, 10, 0.25, 0.3, 0.1, 0.6), (7, 12, 0.5, 0.55, 0.3, 0.8), (8, 8, 0.55, 0.625, 0.3, 0.86)];
/// Non-empty bins under `ts` (both signals) and `resoftmax_ts`.
pub const CALIBRATED_BINS: [BinSpec; 1] = [(10, 30, 0.7, 0.7, 0.52, 0.83)];

/// The fixture.
pub fn results() -> CalibrationResults {
    CalibrationResults {
        candor_version: "0.1.0".to_string(),
        run: run_summary(),
        settings: CalibrateSettings {
            calib_fraction: Some(0.5),
            seed: 7,
            bootstrap_resamples: 1000,
            level: 0.95,
            epsilon: 1e-6,
            unparseable: "exclude".to_string(),
            target_precisions: vec![0.9, 0.99],
            temperature_bounds: [0.01, 100.0],
            interval_method: "percentile bootstrap over the test examples; each calibrator fitted once".to_string(),
            calibrators: None,
            metrics: None,
        },
        labels: vec!["joy".to_string(), AWKWARD_LABEL.to_string(), "anger".to_string()],
        n_calibration: 30,
        n_test: 30,
        signals: vec![verbalized(), logits()],
        comparisons: vec![comparison("none", -0.0766), comparison("ts", 0.0125)],
        agreement: Some(SignalAgreement {
            n: 59,
            mean_rank_correlation: Some(0.4321),
            rank_correlation_defined: 15,
            argmax_agreement: 0.3051,
        }),
    }
}

/// The verbalized answers: 3 in 4 uniform (degenerate).
fn diagnostics() -> SignalDiagnostics {
    SignalDiagnostics {
        n: 59,
        constant_share: 0.75,
        modal_share: 0.75,
        modal_answer: vec![1.0 / 3.0; 3],
        mean_entropy: 0.9876,
        distinct_answers: 9,
        degenerate: true,
    }
}

/// Two ε of the sweep; the larger one stops at the upper bound.
fn sweep() -> Vec<SweepPoint> {
    let point = |epsilon: f64, temperature: f64, at_bound: bool, nll_none: f64| SweepPoint {
        epsilon,
        temperature: candor_calib::calibrators::TemperatureParams {
            temperature,
            at_bound,
            identifiable: true,
            bounds: [0.01, 100.0],
            iterations: 5,
        },
        nll_none,
        nll_ts: 1.0,
        ece_none: 0.3,
        ece_ts: 0.1,
    };
    vec![point(1e-8, 3.5, false, 5.5), point(1e-2, 100.0, true, 1.5)]
}

fn run_summary() -> RunSummary {
    RunSummary {
        dir: "runs/demo & <test>".to_string(),
        model: "tiny <model> & \"co\"".to_string(),
        architecture: "llama".to_string(),
        weights: "q4_1 ×210, f32 ×61".to_string(),
        model_sha256: "0123456789abcdef0123456789abcdef".to_string(),
        dataset: "demo_emotion".to_string(),
        split: "test".to_string(),
        verbalized_mode: Some("constrained".to_string()),
        examples: 60,
        truncated: 2,
        model_seconds: 123.45,
        calibration_run: None,
    }
}

fn verbalized() -> SignalResults {
    let mut none = calibrator("none", json!({"method": "identity"}), 0.10, &VERBALIZED_NONE_BINS);
    none.metrics.insert("ece_15_equal_width".to_string(), Estimate { value: Some(0.1234), ci: Some([0.0987, 0.15]) });
    let ts = versus_none(calibrator("ts", json!({"method": "temperature", "temperature": 2.5}), 0.20, &CALIBRATED_BINS));
    let mut resoftmax = calibrator(
        "resoftmax_ts",
        json!({"method": "temperature", "temperature": 100.0, "at_bound": true}),
        0.30,
        &CALIBRATED_BINS,
    );
    resoftmax.fit_status = FitStatus::AtUpperBound;
    let vector = calibrator("vector", json!({"method": "vector", "weights": [1.0, 2.0, 3.0]}), 0.40, &CALIBRATED_BINS);
    SignalResults {
        signal: "verbalized".to_string(),
        input_kind: "probabilities".to_string(),
        n_calibration: 29,
        n_test: 30,
        well_formedness: Some(WellFormedness {
            status_counts: BTreeMap::from([
                ("ok".to_string(), 50),
                ("partial".to_string(), 3),
                ("renormalized".to_string(), 6),
                ("unparseable".to_string(), 1),
            ]),
            total: 60,
            mean_abs_sum_deviation: Some(0.0421),
            excluded: 1,
            missing_labels: BTreeMap::from([(AWKWARD_LABEL.to_string(), 2), ("anger".to_string(), 1)]),
        }),
        mean_outside_mass: None,
        diagnostics: Some(diagnostics()),
        epsilon_sweep: sweep(),
        calibrators: vec![none, ts, resoftmax, vector],
    }
}

fn logits() -> SignalResults {
    let none = calibrator("none", json!({"method": "identity"}), 0.50, &LOGITS_NONE_BINS);
    let mut ts = versus_none(calibrator("ts", json!({"method": "temperature", "temperature": 1.25}), 0.60, &CALIBRATED_BINS));
    ts.metrics.insert("auroc".to_string(), Estimate { value: None, ci: None });
    SignalResults {
        signal: "logits".to_string(),
        input_kind: "logits".to_string(),
        n_calibration: 30,
        n_test: 30,
        well_formedness: None,
        mean_outside_mass: Some(0.3127),
        diagnostics: None,
        epsilon_sweep: Vec::new(),
        calibrators: vec![none, ts],
    }
}

/// Metric `i` (in `candor eval` order) has value `base + i/100` and interval ±0.02.
fn calibrator(name: &str, params: serde_json::Value, base: f64, bins: &[BinSpec]) -> CalibratorResults {
    let metrics = Metric::ALL
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let value = base + i as f64 / 100.0;
            (m.name().to_string(), Estimate { value: Some(value), ci: Some([value - 0.02, value + 0.02]) })
        })
        .collect();
    CalibratorResults {
        calibrator: name.to_string(),
        params,
        fit_status: FitStatus::Fitted,
        temperature_ci: None,
        metrics,
        difference_vs_none: BTreeMap::new(),
        reliability: diagram(bins),
        thresholds: thresholds(),
    }
}

fn versus_none(mut results: CalibratorResults) -> CalibratorResults {
    results.difference_vs_none = BTreeMap::from([
        ("ece_15_equal_width".to_string(), difference(-0.05, [-0.08, -0.02])),
        ("brier".to_string(), difference(0.01, [-0.01, 0.03])),
        ("nll".to_string(), difference(-0.2, [-0.3, -0.1])),
    ]);
    results
}

fn difference(value: f64, ci: [f64; 2]) -> Difference {
    Difference { a: Some(0.3), b: Some(0.3 - value), value: Some(value), ci: Some(ci), fraction_at_most_zero: Some(0.5) }
}

fn comparison(name: &str, ece_difference: f64) -> SignalComparison {
    let ece = Difference {
        a: Some(0.1234),
        b: Some(0.1234 - ece_difference),
        value: Some(ece_difference),
        ci: Some([ece_difference - 0.05, ece_difference + 0.05]),
        fraction_at_most_zero: Some(0.97),
    };
    let auroc = Difference { a: None, b: Some(0.7), value: None, ci: None, fraction_at_most_zero: None };
    SignalComparison {
        calibrator: name.to_string(),
        n_test: 30,
        differences: BTreeMap::from([("ece_15_equal_width".to_string(), ece), ("auroc".to_string(), auroc)]),
    }
}

fn thresholds() -> Vec<ThresholdResult> {
    vec![
        ThresholdResult {
            target_precision: 0.9,
            threshold: Some(0.8125),
            calibration_precision: Some(0.92),
            calibration_recall: Some(0.4),
            test_precision: Some(Estimate { value: Some(0.88), ci: Some([0.7, 1.0]) }),
            test_recall: Some(Estimate { value: Some(0.35), ci: Some([0.2, 0.5]) }),
        },
        ThresholdResult {
            target_precision: 0.99,
            threshold: None,
            calibration_precision: None,
            calibration_recall: None,
            test_precision: None,
            test_recall: None,
        },
    ]
}

/// 15 equal-width bins, empty except those given.
pub fn diagram(bins: &[BinSpec]) -> ReliabilityDiagram {
    let all = (0..15)
        .map(|b| {
            let (lower, upper) = (Some(b as f64 / 15.0), Some((b + 1) as f64 / 15.0));
            match bins.iter().find(|spec| spec.0 == b) {
                Some(&(_, count, confidence, accuracy, low, high)) => ReliabilityBin {
                    lower,
                    upper,
                    count,
                    mean_confidence: Some(confidence),
                    accuracy: Some(accuracy),
                    ci_low: Some(low),
                    ci_high: Some(high),
                },
                None => ReliabilityBin {
                    lower,
                    upper,
                    count: 0,
                    mean_confidence: None,
                    accuracy: None,
                    ci_low: None,
                    ci_high: None,
                },
            }
        })
        .collect();
    ReliabilityDiagram {
        class: None,
        binning: Binning::EqualWidth(15),
        level: 0.95,
        n_rows: bins.iter().map(|spec| spec.1).sum(),
        bins: all,
    }
}
