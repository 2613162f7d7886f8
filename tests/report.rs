//! End-to-end tests of `candor report`: `candor calibrate` runs on a copy of the calibrate fixture
//! runs (tests/fixtures/calibrate/), then the report is rendered in each format and its content
//! is checked against the numbers of the `calibration.json` it was made from, read here as plain
//! JSON and formatted independently.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn candor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_candor")).args(args).output().expect("the candor binary runs")
}

fn succeed(args: &[&str]) -> String {
    let output = candor(args);
    assert!(output.status.success(), "candor {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// A calibrated copy of the calibrate fixture's test run (with its calibration run).
fn calibrated_run(temp: &Path) -> PathBuf {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/calibrate");
    for name in ["test-run", "calibration-run"] {
        std::fs::create_dir_all(temp.join(name)).unwrap();
        for file in ["manifest.json", "predictions.jsonl"] {
            std::fs::copy(fixtures.join(name).join(file), temp.join(name).join(file)).unwrap();
        }
    }
    let run = temp.join("test-run");
    let calibration = temp.join("calibration-run");
    succeed(&[
        "calibrate",
        "--run",
        run.to_str().unwrap(),
        "--calibration-run",
        calibration.to_str().unwrap(),
        "--bootstrap",
        "200",
        "--quiet",
    ]);
    run
}

fn calibration(run: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("calibration.json")).unwrap()).unwrap()
}

/// `value [low, high]` with 4 decimals, or `n/a`, from an `{"value", "ci"}` object.
fn cell(estimate: &Value) -> String {
    let Some(value) = estimate["value"].as_f64() else {
        return "n/a".to_string();
    };
    match estimate["ci"].as_array() {
        Some(ci) => format!("{value:.4} [{:.4}, {:.4}]", ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap()),
        None => format!("{value:.4}"),
    }
}

/// The cells of the Markdown table row that starts with `keys`.
fn row<'a>(markdown: &'a str, keys: &[&str]) -> Vec<&'a str> {
    markdown
        .lines()
        .map(|l| l.trim_matches('|').split(" | ").map(str::trim).collect::<Vec<_>>())
        .find(|cells| cells.len() > keys.len() && cells[..keys.len()] == *keys)
        .unwrap_or_else(|| panic!("no row {keys:?} in\n{markdown}"))
}

#[test]
fn markdown_headline_shows_the_calibration_numbers() {
    let temp = tempfile::tempdir().unwrap();
    let run = calibrated_run(temp.path());
    let printed = succeed(&["report", "--run", run.to_str().unwrap()]);
    let path = run.join("report.md");
    assert_eq!(printed.trim(), path.to_str().unwrap(), "prints the path written");
    let markdown = std::fs::read_to_string(&path).unwrap();
    let header = row(&markdown, &["signal", "calibrator"]);
    let results = calibration(&run);
    let mut checked = 0;
    for signal in results["signals"].as_array().unwrap() {
        for calibrator in signal["calibrators"].as_array().unwrap() {
            let name = calibrator["calibrator"].as_str().unwrap();
            if !["none", "ts", "resoftmax_ts"].contains(&name) {
                continue;
            }
            let cells = row(&markdown, &[signal["signal"].as_str().unwrap(), name]);
            for metric in ["accuracy", "ece_15_equal_width", "smooth_ece", "brier", "nll", "auroc"] {
                let column = header.iter().position(|&h| h == metric).unwrap();
                assert_eq!(cells[column], cell(&calibrator["metrics"][metric]), "{name} {metric}");
                checked += 1;
            }
        }
    }
    // verbalized: none, ts, resoftmax_ts; logits: none, ts.
    assert_eq!(checked, 5 * 6);
}

#[test]
fn json_to_stdout_is_the_calibration_document() {
    let temp = tempfile::tempdir().unwrap();
    let run = calibrated_run(temp.path());
    let printed = succeed(&["report", "--run", run.to_str().unwrap(), "--format", "json", "--out", "-"]);
    let document: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(document, calibration(&run));
    assert!(!run.join("report.json").exists(), "--out - writes no file");
}

#[test]
fn html_has_a_marker_per_non_empty_bin_and_no_external_reference() {
    let temp = tempfile::tempdir().unwrap();
    let run = calibrated_run(temp.path());
    let out = temp.path().join("page.html");
    let printed = succeed(&["report", "--run", run.to_str().unwrap(), "--format", "html", "--out", out.to_str().unwrap()]);
    assert_eq!(printed.trim(), out.to_str().unwrap());
    let page = std::fs::read_to_string(&out).unwrap();
    let results = calibration(&run);
    let (mut diagrams, mut bins) = (0, 0);
    for name in ["none", "ts", "resoftmax_ts"] {
        let with_it: Vec<&Value> = results["signals"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["calibrators"].as_array().unwrap().iter().find(|c| c["calibrator"] == name))
            .collect();
        diagrams += usize::from(!with_it.is_empty());
        bins += with_it
            .iter()
            .flat_map(|c| c["reliability"]["bins"].as_array().unwrap())
            .filter(|b| b["count"].as_u64().unwrap() > 0 && b["accuracy"].is_f64() && b["mean_confidence"].is_f64())
            .count();
    }
    assert_eq!(page.matches("<svg").count(), diagrams);
    assert_eq!(page.matches("class=\"point\"").count(), bins);
    assert!(bins > 0);
    for reference in ["http", "src=", "href", "url(", "<script"] {
        assert!(!page.contains(reference), "{reference} in the page");
    }
}

#[test]
fn a_run_without_calibration_says_what_to_run() {
    let temp = tempfile::tempdir().unwrap();
    let output = candor(&["report", "--run", temp.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("calibration.json") && stderr.contains("candor calibrate --run"), "{stderr}");
    let bad_format = candor(&["report", "--run", temp.path().to_str().unwrap(), "--format", "pdf"]);
    assert_eq!(bad_format.status.code(), Some(2));
}
