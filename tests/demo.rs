//! End-to-end test of the newcomer's path on the real default model (SmolLM2-135M-Instruct Q4_1,
//! fetched by `scripts/fetch-default-model.sh`; failing when absent): `candor demo`
//! on a small sample of the embedded demo dataset — both signals, calibration, and every report
//! format — then a re-run that resumes without recomputing, and `candor report` for each format.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn candor(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_candor")).args(args).output().expect("the candor binary runs");
    assert!(
        output.status.success(),
        "candor {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn demo_runs_both_signals_calibrates_and_writes_every_report() {
    assert!(model_path().exists(), "{} is absent: run scripts/fetch-default-model.sh (scripts/test.sh does)", model_path().display());
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("demo");
    let (model, out_arg) = (model_path().display().to_string(), out.display().to_string());
    let demo = ["demo", "--model", &model, "--limit", "12", "--bootstrap", "100", "--out", &out_arg];
    candor(&demo);

    let records = std::fs::read_to_string(out.join("predictions.jsonl")).unwrap();
    assert_eq!(records.lines().count(), 12);
    let results: Value = serde_json::from_str(&std::fs::read_to_string(out.join("calibration.json")).unwrap()).unwrap();
    let signals: Vec<&str> = results["signals"].as_array().unwrap().iter().map(|s| s["signal"].as_str().unwrap()).collect();
    assert_eq!(signals, ["verbalized", "logits"]);
    assert_eq!(results["n_calibration"].as_u64().unwrap() + results["n_test"].as_u64().unwrap(), 12);
    assert!(!results["comparisons"].as_array().unwrap().is_empty(), "the signals are compared");

    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(markdown.contains("verbalized") && markdown.contains("logits") && markdown.contains("resoftmax_ts"));
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.trim_end().ends_with("</html>"));

    // Re-running resumes: no example is recomputed, the records stay byte-identical.
    let again = candor(&demo);
    assert!(String::from_utf8_lossy(&again.stderr).contains("(0 new"), "the second demo resumes");
    assert_eq!(std::fs::read_to_string(out.join("predictions.jsonl")).unwrap(), records);

    // `candor report` renders each format from calibration.json; JSON is the results themselves.
    let json = candor(&["report", "--run", &out_arg, "--format", "json", "--out", "-"]);
    let reported: Value = serde_json::from_slice(&json.stdout).unwrap();
    let rewritten: Value = serde_json::from_str(&std::fs::read_to_string(out.join("calibration.json")).unwrap()).unwrap();
    assert_eq!(reported, rewritten);
    for format in ["md", "html"] {
        let printed = candor(&["report", "--run", &out_arg, "--format", format]);
        let path = out.join(format!("report.{format}"));
        assert_eq!(String::from_utf8_lossy(&printed.stdout).trim(), path.display().to_string());
    }
}
