//! End-to-end tests of `candor eval`: the binary is run on fixture files (tests/fixtures/eval/)
//! and on files written by the tests, and its JSON output is checked against values derived by
//! hand or by an independent computation in the test.

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/eval").join(name)
}

fn candor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_candor")).args(args).output().expect("the candor binary runs")
}

/// Runs `candor eval --json` on `input` (or, when `input` is empty, on what `extra` names).
fn eval_json(input: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["eval", "--json"];
    if !input.as_os_str().is_empty() {
        args.extend(["--input", input.to_str().unwrap()]);
    }
    args.extend_from_slice(extra);
    let output = candor(&args);
    assert!(
        output.status.success(),
        "candor eval failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("--json prints one JSON document")
}

fn metric(result: &Value, name: &str) -> f64 {
    result["metrics"][name]["value"].as_f64().unwrap_or_else(|| panic!("metric {name} in {result}"))
}

fn result<'a>(report: &'a Value, calibrator: &str) -> &'a Value {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["calibrator"] == calibrator)
        .unwrap_or_else(|| panic!("no result for {calibrator}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn uncalibrated_probabilities_match_hand_computed_metrics() {
    // Rows (gold, p_a): (a, .8) (a, .6) (b, .3) (b, .9); the last is wrong with confidence .9.
    let report = eval_json(&fixture("probs_small.jsonl"), &["--calib-fraction", "0", "--bootstrap", "0"]);
    assert_eq!(report["labels"], serde_json::json!(["a", "b"]));
    assert_eq!((report["n_calibration"].as_u64(), report["n_test"].as_u64()), (Some(0), Some(4)));
    assert_eq!(report["results"].as_array().unwrap().len(), 1, "fraction 0 evaluates only `none`");
    let none = result(&report, "none");
    assert!(close(metric(none, "accuracy"), 0.75));
    let nll = -(0.8f64.ln() + 0.6f64.ln() + 0.7f64.ln() + 0.1f64.ln()) / 4.0;
    assert!(close(metric(none, "nll"), nll));
    // Brier, summed over classes: 2·(.2², .4², .3², .9²) averaged.
    assert!(close(metric(none, "brier"), 2.0 * (0.04 + 0.16 + 0.09 + 0.81) / 4.0));
    // Four confidences in four different 1/15-wide bins: ECE = mean |correct − confidence|.
    assert!(close(metric(none, "ece_15_equal_width"), (0.2 + 0.4 + 0.3 + 0.9) / 4.0));
    assert!(close(metric(none, "mce"), 0.9));
    assert!(none["metrics"]["accuracy"]["ci"].is_null(), "no interval without resamples");
    let names: Vec<&str> = none["metrics"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "accuracy", "macro_f1", "nll", "brier", "ece_15_equal_width", "ece_10_equal_mass",
            "classwise_ece", "mce", "rmsce", "debiased_l2_ce", "smooth_ece", "auroc", "aurc"
        ]
    );
}

#[test]
fn logits_are_read_through_softmax_and_skip_the_resoftmax_control() {
    // softmax gives the gold label .75, .8 and .5.
    let report = eval_json(&fixture("logits_small.jsonl"), &["--calib-fraction", "0", "--bootstrap", "0"]);
    let nll = -(0.75f64.ln() + 0.8f64.ln() + 0.5f64.ln()) / 3.0;
    assert!((metric(result(&report, "none"), "nll") - nll).abs() < 1e-12);

    let rows: String = (0..40)
        .map(|i| format!("{{\"label\": \"{}\", \"logits\": {{\"a\": {}, \"b\": 0}}}}\n", ["a", "b"][i % 2], (i % 7) as f64 - 3.0))
        .collect();
    let file = temp_file(&rows);
    let report = eval_json(file.path(), &["--bootstrap", "0"]);
    let calibrators: Vec<&str> =
        report["results"].as_array().unwrap().iter().map(|r| r["calibrator"].as_str().unwrap()).collect();
    assert_eq!(calibrators, ["none", "ts", "vector", "platt", "histogram", "isotonic"]);
}

#[test]
fn verbalized_text_is_parsed_and_every_status_counted() {
    let report = eval_json(
        &fixture("text_mixed.jsonl"),
        &["--calib-fraction", "0", "--bootstrap", "0", "--unparseable", "exclude"],
    );
    assert_eq!(report["labels"], serde_json::json!(["anger", "joy", "sadness"]));
    assert_eq!(
        report["parse"],
        serde_json::json!({"ok": 3, "partial": 1, "renormalized": 1, "unparseable": 1})
    );
    assert_eq!(report["excluded"], 1);
    assert_eq!(report["n_test"], 5);
    // Rows used: joy .7 ✓, sadness .8 ✓, anger 1/3 (renormalised three-way tie holding the gold
    // label: 1/3 correct), joy .9 ✓ (partial), sadness .6 ✓.
    assert!(close(metric(result(&report, "none"), "accuracy"), (4.0 + 1.0 / 3.0) / 5.0));
    // The partial answer's missing `anger` (0) is lifted to ε = 1e-6 like every zero, so its
    // `joy` becomes 0.9 / (1 + ε).
    let partial_joy = 0.9f64 / (1.0 + 1e-6);
    let nll = -(0.7f64.ln() + 0.8f64.ln() + (1.0f64 / 3.0).ln() + partial_joy.ln() + 0.6f64.ln()) / 5.0;
    assert!((metric(result(&report, "none"), "nll") - nll).abs() < 1e-12);

    // Uniform is the default, as in `candor calibrate`.
    let uniform = eval_json(&fixture("text_mixed.jsonl"), &["--calib-fraction", "0", "--bootstrap", "0"]);
    assert_eq!((uniform["excluded"].as_u64(), uniform["n_test"].as_u64()), (Some(0), Some(6)));
}

/// 600 rows over three classes from an overconfident model: it is right 60% of the time at
/// every confidence level, but puts 0.9–0.98 on its answer. (Each block of ten rows shares one
/// confidence level, and `7i mod 10` runs over all residues in a block, so six of ten are right.)
fn overconfident_rows() -> String {
    let labels = ["x", "y", "z"];
    (0..600)
        .map(|i| {
            let gold = i % 3;
            let predicted = if (7 * i) % 10 < 6 { gold } else { (gold + 1 + i % 2) % 3 };
            let top = 0.9 + 0.02 * ((i / 10) % 5) as f64;
            let probs: Vec<String> = (0..3)
                .map(|c| format!("\"{}\": {}", labels[c], if c == predicted { top } else { (1.0 - top) / 2.0 }))
                .collect();
            format!("{{\"label\": \"{}\", \"probs\": {{{}}}}}\n", labels[gold], probs.join(", "))
        })
        .collect()
}

#[test]
fn invert_softmax_temperature_scaling_repairs_overconfidence() {
    let file = temp_file(&overconfident_rows());
    let report = eval_json(file.path(), &["--bootstrap", "200", "--seed", "3"]);
    assert_eq!((report["n_calibration"].as_u64(), report["n_test"].as_u64()), (Some(300), Some(300)));
    let calibrators: Vec<&str> =
        report["results"].as_array().unwrap().iter().map(|r| r["calibrator"].as_str().unwrap()).collect();
    assert_eq!(calibrators, ["none", "ts", "resoftmax_ts", "vector", "platt", "histogram", "isotonic"]);

    let none = result(&report, "none");
    let ts = result(&report, "ts");
    let temperature = ts["params"]["temperature"].as_f64().unwrap();
    assert!(temperature > 1.0, "overconfident input needs T > 1, got {temperature}");
    assert!(metric(ts, "ece_15_equal_width") < metric(none, "ece_15_equal_width") / 2.0);
    assert!(metric(ts, "nll") < metric(none, "nll"));
    // Temperature scaling never changes the argmax.
    assert!(close(metric(ts, "accuracy"), metric(none, "accuracy")));
    // The paired difference is the difference of the point values, with an interval around it.
    let difference = &ts["difference_vs_none"]["ece_15_equal_width"];
    let d = difference["value"].as_f64().unwrap();
    assert!(close(d, metric(ts, "ece_15_equal_width") - metric(none, "ece_15_equal_width")));
    let ci = difference["ci"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() <= d && d <= ci[1].as_f64().unwrap());
    assert!(ci[1].as_f64().unwrap() < 0.0, "the improvement is significant");
    for name in ["ece_15_equal_width", "nll", "brier"] {
        let ci = none["metrics"][name]["ci"].as_array().unwrap();
        let (lo, hi) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
        assert!(lo <= metric(none, name) && metric(none, name) <= hi, "{name} lies in its interval");
    }
}

#[test]
fn the_same_command_prints_the_same_bytes() {
    let file = temp_file(&overconfident_rows());
    let path = file.path().to_str().unwrap();
    let args = ["eval", "--input", path, "--bootstrap", "100", "--seed", "9"];
    let (first, second) = (candor(&args), candor(&args));
    assert!(first.status.success());
    assert_eq!(first.stdout, second.stdout);
    let table = String::from_utf8(first.stdout).unwrap();
    assert!(table.contains("ece_15_equal_width") && table.contains("resoftmax_ts"), "{table}");
}

fn temp_file(content: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(content.as_bytes()).unwrap();
    file
}

/// Runs `candor eval` on `content` and returns its error message, asserting a non-zero exit.
fn eval_error(content: &str, extra: &[&str]) -> String {
    let file = temp_file(content);
    let mut args = vec!["eval", "--input", file.path().to_str().unwrap()];
    args.extend_from_slice(extra);
    let output = candor(&args);
    assert!(!output.status.success(), "expected failure for {content:?}");
    assert!(output.stdout.is_empty(), "nothing is printed on failure");
    String::from_utf8(output.stderr).unwrap()
}

const GOOD: &str = "{\"label\": \"a\", \"probs\": {\"a\": 0.5, \"b\": 0.5}}\n";

#[test]
fn bad_input_is_reported_with_its_line_and_problem() {
    let cases: [(String, &[&str], &[&str]); 9] = [
        (format!("{GOOD}not json\n"), &[], &[":2:", "not valid JSON"]),
        (format!("{GOOD}{{\"label\": \"a\", \"probs\": {{\"a\": NaN, \"b\": 0.5}}}}\n"), &[], &[":2:", "NaN"]),
        (format!("{GOOD}{{\"label\": \"a\", \"probs\": {{\"a\": -0.5, \"b\": 1.5}}}}\n"), &[], &[":2:", "non-negative"]),
        (format!("{GOOD}{{\"probs\": {{\"a\": 0.5, \"b\": 0.5}}}}\n"), &[], &[":2:", "missing field `label`"]),
        (format!("{GOOD}{{\"label\": \"c\", \"probs\": {{\"a\": 0.5, \"b\": 0.5}}}}\n"), &["--labels", "a,b"], &[":2:", "label 'c'"]),
        (format!("{GOOD}{{\"label\": \"a\", \"probs\": {{\"a\": 0.5, \"q\": 0.5}}}}\n"), &["--labels", "a,b"], &[":2:", "unknown label 'q'"]),
        (format!("{GOOD}{{\"label\": \"b\", \"probs\": {{\"a\": 1.0}}}}\n"), &[], &[":2:", "lacks label 'b'"]),
        (format!("{GOOD}{{\"label\": \"b\", \"text\": \"{{}}\"}}\n"), &[], &[":2:", "same kind"]),
        (String::new(), &[], &["no examples"]),
    ];
    for (content, extra, expected) in cases {
        let message = eval_error(&content, extra);
        for part in expected {
            assert!(message.contains(part), "{content:?}: message {message:?} lacks {part:?}");
        }
    }
}

#[test]
fn unusable_options_are_refused() {
    assert!(eval_error(GOOD, &["--calib-fraction", "1.5"]).contains("fraction"));
    let missing = candor(&["eval", "--input", "/nonexistent/file.jsonl"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/file.jsonl"));
}

/// `--run DIR --signal S` reads a real `candor run` of the default model: the logit signal's
/// `none` probabilities are softmax of the recorded label log-probs, and the verbalized signal is
/// re-parsed from the recorded text with the run's labels.
#[test]
fn a_run_directory_is_read_signal_by_signal() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(model.exists(), "{} is missing: run scripts/fetch-default-model.sh", model.display());
    let dataset = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/candor-cli/data/demo_emotion.jsonl");
    let out = tempfile::tempdir().unwrap();
    let run_dir = out.path().join("run");
    let run = candor(&[
        "run", "--model", model.to_str().unwrap(), "--dataset", dataset.to_str().unwrap(),
        "--limit", "6", "--verbalized", "constrained", "--max-fraction-digits", "2", "--quiet",
        "--out", run_dir.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "candor run failed: {}", String::from_utf8_lossy(&run.stderr));
    let records: Vec<Value> = std::fs::read_to_string(run_dir.join("predictions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 6);

    let run_arg = run_dir.to_str().unwrap();
    let flags = ["--run", run_arg, "--calib-fraction", "0", "--bootstrap", "0"];
    let logits = eval_json(Path::new(""), &[&flags[..], &["--signal", "logits"]].concat());
    let expected_nll = records
        .iter()
        .map(|r| {
            let log_probs: Vec<f64> =
                r["logits"]["log_probs"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            let max = log_probs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + log_probs.iter().map(|z| (z - max).exp()).sum::<f64>().ln();
            lse - log_probs[r["gold_index"].as_u64().unwrap() as usize]
        })
        .sum::<f64>()
        / 6.0;
    assert!((metric(result(&logits, "none"), "nll") - expected_nll).abs() < 1e-9);
    assert_eq!(logits["labels"], serde_json::json!(["anger", "fear", "joy", "love", "sadness", "surprise"]));

    let verbalized = eval_json(Path::new(""), &[&flags[..], &["--signal", "verbalized"]].concat());
    let parsed: usize = verbalized["parse"].as_object().unwrap().values().map(|v| v.as_u64().unwrap() as usize).sum();
    assert_eq!(parsed, 6, "every record is counted under one parse status");
    // A constrained answer always has the dict's syntax; it is unusable only when every number is
    // 0 (no distribution to normalise), which a small model does write.
    let unparseable = verbalized["parse"].get("unparseable").and_then(Value::as_u64).unwrap_or(0) as usize;
    let all_zero = records
        .iter()
        .filter(|r| r["verbalized"]["parsed"]["raw_values"].as_array().unwrap().iter().all(|v| v.as_f64() == Some(0.0)))
        .count();
    assert_eq!(unparseable, all_zero, "only all-zero constrained answers are unparseable");
}

#[test]
fn a_temperature_at_its_bound_is_flagged_in_the_table_and_the_json() {
    // One-hot answers that cycle through the labels, independent of the gold label.
    let rows: String = (0..60)
        .map(|i| {
            let answer = ["a", "b", "c"][i % 3];
            let probs: Vec<String> = ["a", "b", "c"].iter().map(|l| format!("\"{l}\": {}", u8::from(*l == answer))).collect();
            format!("{{\"label\": \"{}\", \"probs\": {{{}}}}}\n", ["a", "b", "c"][(i / 3) % 3], probs.join(", "))
        })
        .collect();
    let file = temp_file(&rows);
    let report = eval_json(file.path(), &["--bootstrap", "0", "--calibrators", "ts"]);
    let ts = result(&report, "ts");
    assert_eq!((ts["fit_status"].as_str(), ts["params"]["temperature"].as_f64()), (Some("at_upper_bound"), Some(100.0)));
    assert_eq!(report["results"].as_array().unwrap().len(), 2, "none and the selected ts");
    let output = candor(&["eval", "--input", file.path().to_str().unwrap(), "--bootstrap", "0", "--calibrators", "ts"]);
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(table.contains("ts T = 100.0000  ⚠ at_upper_bound: the temperature stopped at the upper search bound"), "{table}");
    assert!(table.contains("ε sweep"), "{table}");
}
