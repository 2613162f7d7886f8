//! End-to-end tests of `candor calibrate` on fixture run directories (tests/fixtures/calibrate/:
//! a 12-example test run and a 9-example calibration run over three labels, with both signals,
//! one unparseable and one partial verbalized answer). Every checked number is recomputed here
//! from the fixture records by an independent, naive computation.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EPSILON: f64 = 1e-6;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/calibrate").join(name)
}

fn candor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_candor")).args(args).output().expect("the candor binary runs")
}

/// A copy of a fixture run directory (calibrate writes into the run directory).
fn copy_run(name: &str, into: &Path) -> PathBuf {
    let dir = into.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["manifest.json", "predictions.jsonl"] {
        std::fs::copy(fixture(name).join(file), dir.join(file)).unwrap();
    }
    dir
}

/// Runs calibrate with the calibration run and returns calibration.json.
fn calibrate(extra: &[&str]) -> (Value, tempfile::TempDir) {
    let temp = tempfile::tempdir().unwrap();
    let run = copy_run("test-run", temp.path());
    let calibration = copy_run("calibration-run", temp.path());
    let mut args = vec!["calibrate", "--run", run.to_str().unwrap(), "--calibration-run", calibration.to_str().unwrap()];
    args.extend_from_slice(extra);
    let output = candor(&args);
    assert!(output.status.success(), "calibrate failed: {}", String::from_utf8_lossy(&output.stderr));
    let text = std::fs::read_to_string(run.join("calibration.json")).unwrap();
    (serde_json::from_str(&text).unwrap(), temp)
}

/// One fixture record: gold index, verbalized probabilities (None: unparseable), log-probs.
struct Example {
    gold: usize,
    verbalized: Option<Vec<f64>>,
    log_probs: Vec<f64>,
}

fn examples(run: &str) -> Vec<Example> {
    let text = std::fs::read_to_string(fixture(run).join("predictions.jsonl")).unwrap();
    text.lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).unwrap();
            let numbers = |v: &Value| v.as_array().map(|a| a.iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>());
            Example {
                gold: record["gold_index"].as_u64().unwrap() as usize,
                verbalized: numbers(&record["verbalized"]["parsed"]["probabilities"]),
                log_probs: numbers(&record["logits"]["log_probs"]).unwrap(),
            }
        })
        .collect()
}

fn softmax(z: &[f64]) -> Vec<f64> {
    let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

fn argmax(p: &[f64]) -> usize {
    (0..p.len()).fold(0, |best, i| if p[i] > p[best] { i } else { best })
}

fn calibrator<'a>(results: &'a Value, signal: &str, name: &str) -> &'a Value {
    let signal = results["signals"].as_array().unwrap().iter().find(|s| s["signal"] == signal).unwrap();
    signal["calibrators"].as_array().unwrap().iter().find(|c| c["calibrator"] == name).unwrap()
}

fn metric(calibrator: &Value, name: &str) -> f64 {
    calibrator["metrics"][name]["value"].as_f64().unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

fn accuracy(rows: &[(Vec<f64>, usize)]) -> f64 {
    rows.iter().filter(|(p, g)| argmax(p) == *g).count() as f64 / rows.len() as f64
}

fn nll(rows: &[(Vec<f64>, usize)]) -> f64 {
    rows.iter().map(|(p, g)| -p[*g].max(1e-12).ln()).sum::<f64>() / rows.len() as f64
}

fn brier(rows: &[(Vec<f64>, usize)]) -> f64 {
    let row_sum = |(p, g): &(Vec<f64>, usize)| -> f64 {
        p.iter().enumerate().map(|(c, q)| (q - f64::from(u8::from(c == *g))).powi(2)).sum()
    };
    rows.iter().map(row_sum).sum::<f64>() / rows.len() as f64
}

/// Verbalized rows with the uniform distribution for unparseable answers.
fn verbalized_rows(run: &str) -> Vec<(Vec<f64>, usize)> {
    examples(run).into_iter().map(|e| (e.verbalized.unwrap_or_else(|| vec![1.0 / 3.0; 3]), e.gold)).collect()
}

fn logit_rows(run: &str) -> Vec<(Vec<f64>, usize)> {
    examples(run).into_iter().map(|e| (softmax(&e.log_probs), e.gold)).collect()
}

#[test]
fn uncalibrated_metrics_match_a_naive_recomputation() {
    let (results, _temp) = calibrate(&["--bootstrap", "0"]);
    assert_eq!((results["n_calibration"].as_u64(), results["n_test"].as_u64()), (Some(9), Some(12)));
    for (signal, rows) in [("verbalized", verbalized_rows("test-run")), ("logits", logit_rows("test-run"))] {
        let none = calibrator(&results, signal, "none");
        assert!(close(metric(none, "accuracy"), accuracy(&rows)), "{signal} accuracy");
        assert!(close(metric(none, "nll"), nll(&rows)), "{signal} nll");
        assert!(close(metric(none, "brier"), brier(&rows)), "{signal} brier");
    }
    // By hand: the logits pick the gold label in 10 of 12 examples, the verbalized answers in 8
    // (ties go to the first label; the unparseable answer is uniform and so picks `negative`).
    assert!(close(metric(calibrator(&results, "logits", "none"), "accuracy"), 10.0 / 12.0));
    assert!(close(metric(calibrator(&results, "verbalized", "none"), "accuracy"), 8.0 / 12.0));
}

#[test]
fn temperature_scaling_applies_the_fitted_temperature_as_the_paper_defines() {
    let (results, _temp) = calibrate(&["--bootstrap", "0"]);
    // Logit signal: softmax(z / T) of the label log-probs.
    let ts = calibrator(&results, "logits", "ts");
    let t = ts["params"]["temperature"].as_f64().unwrap();
    let rows: Vec<(Vec<f64>, usize)> = examples("test-run")
        .into_iter()
        .map(|e| (softmax(&e.log_probs.iter().map(|z| z / t).collect::<Vec<_>>()), e.gold))
        .collect();
    assert!(close(metric(ts, "nll"), nll(&rows)));
    // Verbalized signal: invert softmax (log max(p, ε)) then softmax(z / T).
    let ts = calibrator(&results, "verbalized", "ts");
    let t = ts["params"]["temperature"].as_f64().unwrap();
    let rows: Vec<(Vec<f64>, usize)> = verbalized_rows("test-run")
        .into_iter()
        .map(|(p, g)| (softmax(&p.iter().map(|q| q.max(EPSILON).ln() / t).collect::<Vec<_>>()), g))
        .collect();
    assert!(close(metric(ts, "nll"), nll(&rows)));
    // The fitted T minimises the calibration NLL: nearby temperatures do no better.
    let calibration: Vec<(Vec<f64>, usize)> = verbalized_rows("calibration-run");
    let nll_at = |t: f64| {
        let rows: Vec<(Vec<f64>, usize)> = calibration
            .iter()
            .map(|(p, g)| (softmax(&p.iter().map(|q| q.max(EPSILON).ln() / t).collect::<Vec<_>>()), *g))
            .collect();
        nll(&rows)
    };
    assert!(nll_at(t) <= nll_at(t * 1.01) && nll_at(t) <= nll_at(t * 0.99));
    // Re-softmax TS is softmax(p / T) on the probabilities themselves.
    let resoftmax = calibrator(&results, "verbalized", "resoftmax_ts");
    let t = resoftmax["params"]["temperature"].as_f64().unwrap();
    let rows: Vec<(Vec<f64>, usize)> = verbalized_rows("test-run")
        .into_iter()
        .map(|(p, g)| (softmax(&p.iter().map(|q| q / t).collect::<Vec<_>>()), g))
        .collect();
    assert!(close(metric(resoftmax, "nll"), nll(&rows)));
}

#[test]
fn well_formedness_counts_every_answer_of_both_runs() {
    let (results, _temp) = calibrate(&["--bootstrap", "0"]);
    let verbalized = &results["signals"][0];
    assert_eq!(verbalized["signal"], "verbalized");
    let table = &verbalized["well_formedness"];
    assert_eq!(table["total"], 21);
    assert_eq!(table["status_counts"], serde_json::json!({"ok": 19, "partial": 1, "unparseable": 1}));
    assert_eq!(table["missing_labels"], serde_json::json!({"neutral": 1}));
    assert_eq!(table["excluded"], 0, "unparseable answers count as uniform by default");
    assert!(close(results["signals"][1]["mean_outside_mass"].as_f64().unwrap(), 0.25));
}

#[test]
fn excluding_unparseable_answers_shrinks_only_the_verbalized_signal_and_the_comparison() {
    let (results, _temp) = calibrate(&["--bootstrap", "0", "--unparseable", "exclude"]);
    let verbalized = &results["signals"][0];
    assert_eq!((verbalized["n_calibration"].as_u64(), verbalized["n_test"].as_u64()), (Some(9), Some(11)));
    assert_eq!(verbalized["well_formedness"]["excluded"], 1);
    assert_eq!(results["signals"][1]["n_test"], 12);
    let none = results["comparisons"].as_array().unwrap().iter().find(|c| c["calibrator"] == "none").unwrap();
    assert_eq!(none["n_test"], 11);
    // On the 11 shared examples: verbalized right 7 times (the excluded one was right when
    // uniform), logits right 9 times (the excluded example was right for the logits too).
    let accuracy = &none["differences"]["accuracy"];
    assert!(close(accuracy["a"].as_f64().unwrap(), 7.0 / 11.0));
    assert!(close(accuracy["b"].as_f64().unwrap(), 9.0 / 11.0));
    assert!(close(accuracy["value"].as_f64().unwrap(), 7.0 / 11.0 - 9.0 / 11.0));
}

#[test]
fn signal_comparison_and_intervals_are_consistent() {
    let (results, _temp) = calibrate(&["--bootstrap", "300", "--seed", "3"]);
    let comparisons = results["comparisons"].as_array().unwrap();
    let names: Vec<&str> = comparisons.iter().map(|c| c["calibrator"].as_str().unwrap()).collect();
    assert_eq!(names, ["none", "ts", "vector", "platt", "histogram", "isotonic"], "calibrators both signals have");
    for comparison in comparisons {
        let name = comparison["calibrator"].as_str().unwrap();
        for (metric_name, difference) in comparison["differences"].as_object().unwrap() {
            let (a, b) = (difference["a"].as_f64(), difference["b"].as_f64());
            if let (Some(a), Some(b)) = (a, b) {
                assert!(close(a, metric(calibrator(&results, "verbalized", name), metric_name)));
                assert!(close(b, metric(calibrator(&results, "logits", name), metric_name)));
                assert!(close(difference["value"].as_f64().unwrap(), a - b));
            }
        }
    }
    let ece = &calibrator(&results, "logits", "ts")["metrics"]["ece_15_equal_width"];
    let (value, ci) = (ece["value"].as_f64().unwrap(), ece["ci"].as_array().unwrap());
    assert!(ci[0].as_f64().unwrap() <= value + 0.2 && ci[0].as_f64().unwrap() <= ci[1].as_f64().unwrap());
    let diagram = &calibrator(&results, "logits", "none")["reliability"];
    let counted: u64 = diagram["bins"].as_array().unwrap().iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, 12, "every test example falls in one reliability bin");
}

#[test]
fn thresholds_are_chosen_on_calibration_and_measured_on_test() {
    let (results, _temp) = calibrate(&["--bootstrap", "0", "--target-precision", "0.8"]);
    let confidences = |rows: &[(Vec<f64>, usize)]| -> Vec<(f64, bool)> {
        rows.iter().map(|(p, g)| (p[argmax(p)], argmax(p) == *g)).collect()
    };
    let calibration = confidences(&logit_rows("calibration-run"));
    let test = confidences(&logit_rows("test-run"));
    let at = |rows: &[(f64, bool)], threshold: f64| {
        let selected: Vec<bool> = rows.iter().filter(|(c, _)| *c >= threshold).map(|(_, ok)| *ok).collect();
        let right = selected.iter().filter(|&&ok| ok).count() as f64;
        let positives = rows.iter().filter(|(_, ok)| *ok).count() as f64;
        (right / selected.len() as f64, right / positives)
    };
    // Naive choice: the candidate threshold (a calibration confidence) with precision ≥ 0.8 and
    // the most recall, ties to the higher threshold.
    let mut best: Option<(f64, f64)> = None;
    for &(threshold, _) in &calibration {
        let (precision, recall) = at(&calibration, threshold);
        let better = best.is_none_or(|(t, r)| recall > r || (recall == r && threshold > t));
        if precision >= 0.8 && better {
            best = Some((threshold, recall));
        }
    }
    let (threshold, recall) = best.expect("some threshold reaches 0.8 on the fixture");
    let chosen = &calibrator(&results, "logits", "none")["thresholds"][0];
    assert!(close(chosen["threshold"].as_f64().unwrap(), threshold));
    assert!(close(chosen["calibration_recall"].as_f64().unwrap(), recall));
    let (test_precision, test_recall) = at(&test, threshold);
    assert!(close(chosen["test_precision"]["value"].as_f64().unwrap(), test_precision));
    assert!(close(chosen["test_recall"]["value"].as_f64().unwrap(), test_recall));
}

#[test]
fn a_fraction_split_uses_the_run_alone_and_is_seeded() {
    let temp = tempfile::tempdir().unwrap();
    let run = copy_run("test-run", temp.path());
    let path = run.to_str().unwrap();
    let read = || std::fs::read_to_string(run.join("calibration.json")).unwrap();
    assert!(candor(&["calibrate", "--run", path, "--bootstrap", "50", "--calib-fraction", "0.5"]).status.success());
    let first = read();
    assert!(candor(&["calibrate", "--run", path, "--bootstrap", "50", "--calib-fraction", "0.5"]).status.success());
    assert_eq!(first, read(), "same command, same numbers");
    let results: Value = serde_json::from_str(&first).unwrap();
    // Half of each class's 4 examples calibrate, the other half test.
    assert_eq!((results["n_calibration"].as_u64(), results["n_test"].as_u64()), (Some(6), Some(6)));
    assert_eq!(results["settings"]["calib_fraction"], 0.5);
}

#[test]
fn bad_calibrate_input_gets_a_clear_error() {
    let temp = tempfile::tempdir().unwrap();
    let run = copy_run("test-run", temp.path());
    let calibration = copy_run("calibration-run", temp.path());
    let stderr = |args: &[&str]| {
        let output = candor(args);
        assert!(!output.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&output.stderr).to_string()
    };
    let run_path = run.to_str().unwrap();
    let missing = temp.path().join("nowhere");
    assert!(stderr(&["calibrate", "--run", missing.to_str().unwrap()]).contains("manifest.json"));
    assert!(stderr(&["calibrate", "--run", run_path, "--calib-fraction", "0"]).contains("--calib-fraction"));

    // A calibration run made with other labels is refused, naming the field.
    let manifest_path = calibration.join("manifest.json");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    std::fs::write(&manifest_path, manifest.replace("\"neutral\"", "\"mixed\"")).unwrap();
    let message = stderr(&["calibrate", "--run", run_path, "--calibration-run", calibration.to_str().unwrap()]);
    assert!(message.contains("dataset.labels"), "{message}");

    // A damaged record names its file and line.
    let predictions = run.join("predictions.jsonl");
    let mut text = std::fs::read_to_string(&predictions).unwrap();
    text = text.replacen("\"gold_index\": 0", "\"gold_index\": 7", 1);
    std::fs::write(&predictions, text).unwrap();
    let message = stderr(&["calibrate", "--run", run_path]);
    assert!(message.contains("predictions.jsonl:1") && message.contains("gold_index 7"), "{message}");
    assert!(!run.join("calibration.json").exists(), "nothing written on error");
}
