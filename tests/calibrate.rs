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

/// The credit of a row's top label: 1/k when the gold label is among the k tied maxima.
fn top_label_credit(p: &[f64], gold: usize) -> f64 {
    let max = p.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let tied = p.iter().filter(|&&q| q == max).count();
    if p[gold] == max { 1.0 / tied as f64 } else { 0.0 }
}

/// The uncalibrated verbalized answer as every calibrator sees it: zeros lifted to ε, renormalised.
fn lifted(p: &[f64]) -> Vec<f64> {
    softmax(&p.iter().map(|q| q.max(EPSILON).ln()).collect::<Vec<_>>())
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
    rows.iter().map(|(p, g)| top_label_credit(p, *g)).sum::<f64>() / rows.len() as f64
}

/// Mean NLL with the gold probability floored at the same ε.
fn nll(rows: &[(Vec<f64>, usize)]) -> f64 {
    rows.iter().map(|(p, g)| -p[*g].max(EPSILON).ln()).sum::<f64>() / rows.len() as f64
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
    let lifted_verbalized = verbalized_rows("test-run").into_iter().map(|(p, g)| (lifted(&p), g)).collect();
    for (signal, rows) in [("verbalized", lifted_verbalized), ("logits", logit_rows("test-run"))] {
        let none = calibrator(&results, signal, "none");
        assert!(close(metric(none, "accuracy"), accuracy(&rows)), "{signal} accuracy");
        assert!(close(metric(none, "nll"), nll(&rows)), "{signal} nll");
        assert!(close(metric(none, "brier"), brier(&rows)), "{signal} brier");
    }
    // By hand: the logits pick the gold label in 10 of 12 examples; the verbalized answers in 7,
    // plus 1/3 for the unparseable one (uniform: a 3-way tie holding the gold label, never
    // "label 0") and 1/2 for test-5's [0.4, 0.4, 0.2] (a 2-way tie holding it).
    assert!(close(metric(calibrator(&results, "logits", "none"), "accuracy"), 10.0 / 12.0));
    assert!(close(metric(calibrator(&results, "verbalized", "none"), "accuracy"), (7.0 + 1.0 / 3.0 + 0.5) / 12.0));
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
    // On the 11 shared examples: verbalized right 7 times and half right once (a 2-way tie
    // holding the gold label), logits right 9 times (the excluded example was right for them).
    let accuracy = &none["differences"]["accuracy"];
    assert!(close(accuracy["a"].as_f64().unwrap(), 7.5 / 11.0));
    assert!(close(accuracy["b"].as_f64().unwrap(), 9.0 / 11.0));
    assert!(close(accuracy["value"].as_f64().unwrap(), 7.5 / 11.0 - 9.0 / 11.0));
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

/// Copies of both fixture runs whose verbalized answers are replaced by `answer(i, gold)` for
/// record `i` (the parse status kept as `ok`).
fn runs_with_answers(into: &Path, answer: impl Fn(usize, usize) -> Vec<f64>) -> (PathBuf, PathBuf) {
    let rewrite = |name: &str| {
        let dir = copy_run(name, into);
        let path = dir.join("predictions.jsonl");
        let lines: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .enumerate()
            .map(|(i, line)| {
                let mut record: Value = serde_json::from_str(line).unwrap();
                let gold = record["gold_index"].as_u64().unwrap() as usize;
                let parsed = &mut record["verbalized"]["parsed"];
                parsed["probabilities"] = serde_json::json!(answer(i, gold));
                parsed["status"] = serde_json::json!("ok");
                record.to_string()
            })
            .collect();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        dir
    };
    (rewrite("test-run"), rewrite("calibration-run"))
}

fn succeed(args: &[&str]) -> String {
    let output = candor(args);
    assert!(output.status.success(), "candor {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn confident_answers_independent_of_the_label_drive_t_to_its_bound_flagged_in_every_output() {
    let temp = tempfile::tempdir().unwrap();
    // One-hot answers that cycle through the labels whatever the gold label is.
    let (run, calibration) = runs_with_answers(temp.path(), |i, _| {
        let mut p = vec![0.0; 3];
        p[(i * 2 + 1) % 3] = 1.0;
        p
    });
    let (run, calibration) = (run.to_str().unwrap(), calibration.to_str().unwrap());
    let terminal = succeed(&["calibrate", "--run", run, "--calibration-run", calibration, "--bootstrap", "0"]);
    let results: Value = serde_json::from_str(&std::fs::read_to_string(Path::new(run).join("calibration.json")).unwrap()).unwrap();
    let ts = calibrator(&results, "verbalized", "ts");
    assert_eq!(ts["fit_status"], "at_upper_bound", "{ts}");
    assert_eq!(ts["params"]["temperature"], 100.0);
    assert!(terminal.contains("100.0000*"), "{terminal}");
    assert!(terminal.contains("* verbalized ts: the temperature stopped at the upper search bound"), "{terminal}");
    let markdown = succeed(&["report", "--run", run, "--format", "md", "--out", "-"]);
    assert!(markdown.contains("## Read this first"), "{markdown}");
    assert!(markdown.contains("`verbalized` under `ts`: the temperature stopped at the upper search bound"));
    assert!(markdown.contains("ts ⚠ at_upper_bound"));
    let html = succeed(&["report", "--run", run, "--format", "html", "--out", "-"]);
    assert!(html.contains("at_upper_bound") && html.contains("upper search bound"));
    let summary = succeed(&["summarize", "--run", run]);
    assert!(summary.contains("ts (T = 100.000, upper bound: no fit)"), "{summary}");
    // A tighter bound is an option, and the flag follows it.
    succeed(&["calibrate", "--run", run, "--calibration-run", calibration, "--bootstrap", "0", "--max-temperature", "5"]);
    let results: Value = serde_json::from_str(&std::fs::read_to_string(Path::new(run).join("calibration.json")).unwrap()).unwrap();
    assert_eq!(calibrator(&results, "verbalized", "ts")["params"]["temperature"], 5.0);
    assert_eq!(results["settings"]["temperature_bounds"], serde_json::json!([0.01, 5.0]));
}

#[test]
fn flat_answers_are_not_identifiable_and_degenerate() {
    let temp = tempfile::tempdir().unwrap();
    let (run, calibration) = runs_with_answers(temp.path(), |_, _| vec![1.0 / 3.0; 3]);
    let (run, calibration) = (run.to_str().unwrap(), calibration.to_str().unwrap());
    let terminal = succeed(&["calibrate", "--run", run, "--calibration-run", calibration, "--bootstrap", "0"]);
    assert!(terminal.contains("warning: verbalized is degenerate: 100.0% of its answers are uniform"), "{terminal}");
    let results: Value = serde_json::from_str(&std::fs::read_to_string(Path::new(run).join("calibration.json")).unwrap()).unwrap();
    assert_eq!(calibrator(&results, "verbalized", "ts")["fit_status"], "not_identifiable");
    let diagnostics = &results["signals"][0]["diagnostics"];
    assert_eq!((diagnostics["constant_share"].as_f64(), diagnostics["distinct_answers"].as_u64()), (Some(1.0), Some(1)));
    assert_eq!(diagnostics["degenerate"], true);
    // Uniform answers are right 1/3 of the time, never "label 0".
    assert!(close(metric(calibrator(&results, "verbalized", "none"), "accuracy"), 1.0 / 3.0));
    let markdown = succeed(&["report", "--run", run, "--format", "md", "--out", "-"]);
    let first_section = markdown.split("\n## ").nth(1).unwrap();
    assert!(first_section.starts_with("Read this first") && first_section.contains("`verbalized` is degenerate"), "{markdown}");
    assert!(first_section.contains("not identifiable"));
}

#[test]
fn selections_refit_intervals_sweep_and_agreement_are_in_the_results() {
    let (results, _temp) = calibrate(&[
        "--bootstrap", "200", "--calibrators", "ts", "--metrics", "nll,ece_15_equal_width,debiased_l2_ce",
        "--bootstrap-refit", "--epsilon-sweep", "1e-6,1e-2",
    ]);
    for signal in results["signals"].as_array().unwrap() {
        let names: Vec<&str> = signal["calibrators"].as_array().unwrap().iter().map(|c| c["calibrator"].as_str().unwrap()).collect();
        assert_eq!(names, ["none", "ts"], "none is always measured");
        let ts = &signal["calibrators"][1];
        let metrics: Vec<&String> = ts["metrics"].as_object().unwrap().keys().collect();
        assert_eq!(metrics, ["debiased_l2_ce", "ece_15_equal_width", "nll"]);
        let [low, high] = [0, 1].map(|i| ts["temperature_ci"][i].as_f64().unwrap());
        let t = ts["params"]["temperature"].as_f64().unwrap();
        assert!(low < high && low <= t * 1.5 && high >= t / 1.5, "{low} {t} {high}");
    }
    assert!(results["settings"]["interval_method"].as_str().unwrap().contains("refitting"));
    // The sweep at ε = 1e-6 is this run's own `none` and `ts` (same ε, same data).
    let verbalized = &results["signals"][0];
    let sweep = verbalized["epsilon_sweep"].as_array().unwrap();
    assert_eq!(sweep.len(), 2);
    assert!(close(sweep[0]["nll_none"].as_f64().unwrap(), metric(&verbalized["calibrators"][0], "nll")));
    assert!(close(sweep[0]["nll_ts"].as_f64().unwrap(), metric(&verbalized["calibrators"][1], "nll")));
    assert!(results["signals"][1]["epsilon_sweep"].as_array().unwrap().is_empty(), "logits have no ε");
    // Agreement over the 20 examples with a parsed answer and label scores.
    assert_eq!(results["agreement"]["n"], 20);
    let agreement = results["agreement"]["argmax_agreement"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&agreement));
}
