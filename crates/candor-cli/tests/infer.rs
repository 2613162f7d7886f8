//! End-to-end tests of `candor score` and `candor generate` on the default model
//! (failing when `models/SmolLM2-135M-Instruct.Q4_1.gguf` is absent), and of
//! their error exits.

use std::path::PathBuf;
use std::process::{Command, Output};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn candor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_candor"))
        .current_dir(workspace_root())
        .args(args)
        .output()
        .expect("the candor binary runs")
}

/// Fails the test when the default model is missing (scripts/test.sh fetches it): a model
/// test never passes by skipping.
fn require_default_model() {
    let path = workspace_root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(path.exists(), "{} is absent: run scripts/fetch-default-model.sh (scripts/test.sh does)", path.display());
}

fn json_of(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

#[test]
fn generate_answers_the_capital_of_france() {
    require_default_model();
    let out = json_of(&candor(&[
        "generate",
        "--chat",
        "--prompt",
        "What is the capital of France?",
        "--json",
    ]));
    assert_eq!(out["generation"]["text"], "The capital of France is Paris.");
    assert_eq!(out["generation"]["stop_reason"], "eos");
    let human = candor(&[
        "generate",
        "--chat",
        "--prompt",
        "What is the capital of France?",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&human.stdout).trim(),
        "The capital of France is Paris."
    );
}

#[test]
fn score_reports_label_log_probs_and_their_softmax() {
    require_default_model();
    let out = json_of(&candor(&[
        "score",
        "--chat",
        "--prompt",
        "Is 'I loved it' positive or negative? Answer with one word.",
        "--labels",
        "Positive,Negative,very mixed",
        "--json",
    ]));
    let labels = out["labels"].as_array().unwrap();
    assert_eq!(labels.len(), 3);
    let log_probs: Vec<f64> = labels
        .iter()
        .map(|l| l["log_prob"].as_f64().unwrap())
        .collect();
    let normalized: Vec<f64> = out["normalized"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let z: f64 = log_probs.iter().map(|lp| lp.exp()).sum();
    for (lp, p) in log_probs.iter().zip(&normalized) {
        assert!((lp.exp() / z - p).abs() < 1e-12);
    }
    for label in labels {
        let n_tokens = label["token_ids"].as_array().unwrap().len();
        let (total, first) = (
            label["log_prob"].as_f64().unwrap(),
            label["first_token_log_prob"].as_f64().unwrap(),
        );
        match n_tokens {
            1 => assert_eq!(total, first),
            _ => assert!(total < first, "more tokens can only lower the log-prob"),
        }
    }
    let outside = out["first_token_mass_outside"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&outside));
}

#[test]
fn constrained_generation_prints_a_dict_over_the_labels() {
    require_default_model();
    let output = candor(&[
        "generate",
        "--chat",
        "--prompt",
        "How likely is it to rain tomorrow in London?",
        "--constrained-labels",
        "rain,no rain",
        "--max-fraction-digits",
        "2",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dict: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(dict.keys().collect::<Vec<_>>(), ["rain", "no rain"], "label order kept");
    assert!(dict
        .values()
        .all(|v| (0.0..=1.0).contains(&v.as_f64().unwrap())));
}

#[test]
fn bad_model_and_device_exit_with_a_message() {
    let missing = candor(&[
        "score",
        "--model",
        "/no/such/model.gguf",
        "--prompt",
        "x",
        "--labels",
        "a",
    ]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/no/such/model.gguf"));
    let device = candor(&["generate", "--device", "quantum", "--prompt", "x"]);
    assert_eq!(device.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&device.stderr).contains("cpu, cuda, cuda:N or metal"));
    let offline = candor(&[
        "generate",
        "--model",
        "hf:nobody/nothing",
        "--offline",
        "--prompt",
        "x",
    ]);
    assert_eq!(offline.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&offline.stderr).contains("offline"));
}
