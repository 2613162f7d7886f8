//! End-to-end tests of `candor run` and `candor merge` with the real default model
//! (SmolLM2-135M-Instruct Q4_1, fetched by `scripts/fetch-default-model.sh`; the model tests fail
//! when it is absent) on tests/fixtures/run: twelve short emotion texts under a fake
//! `--data-dir`, and bad datasets under `bad/`.
//!
//! Checked: the manifest and every record field against independent derivations (sha256 of the
//! model file and templates, softmax of the label log-probs, outside mass from first-token
//! probabilities), resuming after SIGKILL and after a torn last line, byte-identical records across
//! runs (timing aside), refusal of a different manifest, bad datasets failing before any directory
//! exists, and shard + merge reproducing the unsharded run. Model runs are serialised: two candle
//! processes on a small machine oversubscribe its cores.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

const LABELS: [&str; 6] = ["anger", "fear", "joy", "love", "sadness", "surprise"];
const GOLD: [&str; 12] = [
    "anger", "fear", "joy", "love", "sadness", "surprise", "anger", "fear", "joy", "love",
    "sadness", "surprise",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/run")
}

fn model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Holds the model lock. A missing model fails the test (scripts/test.sh fetches it): a model
/// test never passes by skipping.
fn model_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    assert!(model_path().exists(), "{} is absent: run scripts/fetch-default-model.sh (scripts/test.sh does)", model_path().display());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `candor run` arguments for the fixture dataset into `out`, plus `extra`; free verbalized
/// generation of at most 2 tokens (fast) unless `extra` names a mode.
fn run_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = default_mode_run_args(out, extra);
    if !extra.contains(&"--verbalized") {
        // Right after `run`: some tests append a flag's value to these arguments.
        args.splice(1..1, ["--verbalized".to_string(), "free".to_string()]);
    }
    args
}

/// `candor run` arguments for the fixture dataset into `out`, plus `extra`, with the default
/// verbalized mode.
fn default_mode_run_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        "--model",
        model_path().to_str().unwrap(),
        "--dataset",
        "emotion",
        "--data-dir",
        fixtures().join("data").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--max-tokens",
        "2",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn candor(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_candor"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("run candor")
}

fn succeed(args: &[String]) {
    let output = candor(args);
    assert!(
        output.status.success(),
        "candor {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn fail(args: &[String]) -> String {
    let output = candor(args);
    assert_eq!(
        output.status.code(),
        Some(1),
        "candor {args:?} should fail: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
}

fn records(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("predictions.jsonl")).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "torn last line");
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The record lines with `elapsed_ms` removed, as text (byte comparison of everything else).
fn timeless_lines(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("predictions.jsonl")).unwrap();
    text.lines()
        .map(|line| {
            let start = line.find(",\"elapsed_ms\":").expect("elapsed_ms field");
            let end = start + line[start + 1..].find(['}', ',']).unwrap() + 1;
            format!("{}{}", &line[..start], &line[end..])
        })
        .collect()
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The uninterrupted reference run (both signals, free verbalized), made once per test binary
/// run under Cargo's temporary directory for integration tests.
fn reference() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("candor-run-reference");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        succeed(&run_args(&dir, &[]));
        dir
    })
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance
}

#[test]
fn a_run_writes_a_manifest_and_sane_records() {
    let _lock = model_lock();
    let dir = reference();
    let manifest = manifest(dir);
    let model_bytes = std::fs::read(model_path()).unwrap();
    assert_eq!(
        manifest["model"]["weights"]["sha256"],
        hex_sha256(&model_bytes)
    );
    assert_eq!(manifest["model"]["architecture"], "llama");
    assert_eq!(manifest["model"]["weights"]["gguf_file_type"], 3, "Q4_1");
    assert_eq!(manifest["dataset"]["labels"], serde_json::json!(LABELS));
    assert_eq!(manifest["dataset"]["examples"], 12);
    assert_eq!(
        manifest["settings"]["signals"],
        serde_json::json!(["verbalized", "logits"])
    );
    assert_eq!(manifest["settings"]["verbalized_mode"], "free");
    assert_eq!(manifest["settings"]["prompt_format"], "chat", "SmolLM2 has a chat template");
    assert_eq!(manifest["selection"]["examples"], 12);
    assert_eq!(manifest["selection"]["truncated"], 0);
    for prompt in ["verbalized", "label"] {
        let text = manifest["prompts"][prompt]["text"].as_str().unwrap();
        assert_eq!(
            manifest["prompts"][prompt]["sha256"],
            hex_sha256(text.as_bytes())
        );
        assert!(
            manifest["prompts"][prompt]["shared_prefix_tokens"]
                .as_u64()
                .unwrap()
                > 50
        );
    }
    let records = records(dir);
    assert_eq!(records.len(), 12);
    let valid_statuses = ["ok", "renormalized", "partial", "unparseable"];
    for (index, record) in records.iter().enumerate() {
        assert_eq!(record["index"], index);
        assert_eq!(record["id"], format!("test-{index}"));
        assert_eq!(record["gold"], GOLD[index]);
        assert_eq!(
            LABELS[record["gold_index"].as_u64().unwrap() as usize],
            GOLD[index]
        );
        assert_eq!(record["truncated"], false);
        let verbalized = &record["verbalized"];
        assert_eq!(verbalized["mode"], "free");
        assert_eq!(verbalized["prefix_reused"], true);
        assert!(verbalized["generated_tokens"].as_u64().unwrap() <= 2);
        let status = verbalized["parsed"]["status"].as_str().unwrap();
        assert!(valid_statuses.contains(&status), "{status}");
        if let Some(probabilities) = verbalized["parsed"]["probabilities"].as_array() {
            let sum: f64 = probabilities.iter().map(|p| p.as_f64().unwrap()).sum();
            assert!(close(sum, 1.0, 1e-9) && probabilities.len() == 6);
        }
        let logits = &record["logits"];
        assert_eq!(logits["prefix_reused"], true);
        let shared = manifest["prompts"]["label"]["shared_prefix_tokens"]
            .as_u64()
            .unwrap();
        assert!(logits["prompt_tokens"].as_u64().unwrap() > shared);
        let values = |field: &str| -> Vec<f64> {
            logits[field]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        };
        let (log_probs, firsts, probabilities) = (
            values("log_probs"),
            values("first_token_log_probs"),
            values("probabilities"),
        );
        // softmax(log_probs), computed here.
        let total: f64 = log_probs.iter().map(|lp| lp.exp()).sum();
        for (p, lp) in probabilities.iter().zip(&log_probs) {
            assert!(close(*p, lp.exp() / total, 1e-12));
        }
        assert!(close(probabilities.iter().sum(), 1.0, 1e-12));
        let counts = logits["token_counts"].as_array().unwrap();
        for ((lp, first), count) in log_probs.iter().zip(&firsts).zip(counts) {
            // A label's probability is at most its first token's, equal for one-token labels.
            assert!(*lp <= first + 1e-12 && *lp < 0.0);
            if count == 1 {
                assert_eq!(lp, first);
            }
        }
        // The six labels start with six different tokens: the mass inside is their sum.
        let inside: f64 = firsts.iter().map(|lp| lp.exp()).sum();
        let outside = logits["outside_mass"].as_f64().unwrap();
        assert!(close(1.0 - outside, inside, 1e-6), "{outside} vs {inside}");
    }
}

#[test]
fn a_killed_run_resumes_to_the_uninterrupted_records() {
    let _lock = model_lock();
    let expected = timeless_lines(reference());
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("run");
    let predictions = out.join("predictions.jsonl");
    for kill_at in [2, 5] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_candor"))
            .args(run_args(&out, &[]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        loop {
            let lines = std::fs::read_to_string(&predictions).map_or(0, |t| t.lines().count());
            if lines >= kill_at {
                break;
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "the run ended before the kill"
            );
            assert!(started.elapsed() < Duration::from_secs(120), "no progress");
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = timeless_lines(&out);
        assert!(lines.len() >= kill_at && lines.len() < 12);
    }
    // A torn last line, as a kill in the middle of a write would leave.
    let mut bytes = std::fs::read(&predictions).unwrap();
    let complete = bytes.len();
    bytes.extend_from_slice(br#"{"index":7,"id":"te"#);
    std::fs::write(&predictions, &bytes).unwrap();
    assert!(complete > 0);
    succeed(&run_args(&out, &[]));
    assert_eq!(timeless_lines(&out), expected);
}

#[test]
fn runs_are_deterministic_apart_from_timing() {
    let _lock = model_lock();
    let temp = tempfile::tempdir().unwrap();
    let extra = [
        "--verbalized",
        "constrained",
        "--max-fraction-digits",
        "1",
        "--limit",
        "2",
        "--seed",
        "5",
    ];
    let (first, second) = (temp.path().join("a"), temp.path().join("b"));
    succeed(&run_args(&first, &extra));
    succeed(&run_args(&second, &extra));
    let lines = timeless_lines(&first);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines, timeless_lines(&second));
    for record in records(&first) {
        let verbalized = &record["verbalized"];
        assert_eq!(verbalized["mode"], "constrained");
        let numbers = verbalized["numbers"].as_array().unwrap();
        let names: Vec<&str> = numbers
            .iter()
            .map(|n| n["label"].as_str().unwrap())
            .collect();
        assert_eq!(names, LABELS);
        for number in numbers {
            let value = number["value"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&value));
            assert!(number["log_prob"].as_f64().unwrap() <= 0.0);
        }
        // The forced dict always parses; its numbers are the raw values.
        let raw: Vec<f64> = numbers
            .iter()
            .map(|n| n["value"].as_f64().unwrap())
            .collect();
        let parsed = &verbalized["parsed"];
        if raw.iter().sum::<f64>() > 0.0 {
            let read: Vec<f64> = parsed["raw_values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(read, raw);
        }
    }
}

#[test]
fn a_directory_with_a_different_manifest_is_refused() {
    let _lock = model_lock();
    let temp = tempfile::tempdir().unwrap();
    let copy = temp.path().join("run");
    std::fs::create_dir(&copy).unwrap();
    for file in ["manifest.json", "predictions.jsonl"] {
        std::fs::copy(reference().join(file), copy.join(file)).unwrap();
    }
    let before = std::fs::read(copy.join("predictions.jsonl")).unwrap();
    let error = fail(&run_args(
        &copy,
        &[
            "--max-fraction-digits",
            "2",
            "--signals",
            "logits,verbalized",
        ],
    ));
    assert!(error.contains("holds a different run"), "{error}");
    assert!(
        error.contains("differs in settings.max_fraction_digits;"),
        "{error}"
    );
    assert!(!error.contains("settings.signals"), "{error}");
    assert_eq!(
        std::fs::read(copy.join("predictions.jsonl")).unwrap(),
        before
    );
    // The same command on the complete copy is accepted and adds nothing.
    succeed(&run_args(&copy, &[]));
    assert_eq!(
        std::fs::read(copy.join("predictions.jsonl")).unwrap(),
        before
    );
}

#[test]
fn bad_datasets_fail_before_a_run_directory_exists() {
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("run");
    let bad = fixtures().join("bad");
    let with_file = |file: &str| {
        let mut args = run_args(&out, &[]);
        let position = args.iter().position(|a| a == "emotion").unwrap();
        args[position] = bad.join(file).to_str().unwrap().to_string();
        args
    };
    let error = fail(&with_file("missing_text.jsonl"));
    assert!(error.contains("missing_text.jsonl, line 2"), "{error}");
    assert!(error.contains("text"), "{error}");
    let error = fail(&with_file("empty.jsonl"));
    assert!(error.contains("empty.jsonl: the file is empty"), "{error}");
    let mut args = run_args(&out, &[]);
    let position = args.iter().position(|a| a == "--data-dir").unwrap();
    args[position + 1] = bad.join("label_dir").to_str().unwrap().to_string();
    let error = fail(&args);
    assert!(error.contains("emotion/test.jsonl, line 2"), "{error}");
    assert!(
        error.contains("label 'happiness' is not a label of emotion"),
        "{error}"
    );
    let template = temp.path().join("prompt.txt");
    std::fs::write(&template, "Classify {txt}").unwrap();
    let error = fail(&run_args(
        &out,
        &["--label-prompt", template.to_str().unwrap()],
    ));
    assert!(error.contains("unknown placeholder {txt}"), "{error}");
    let error = fail(&run_args(&out, &["--batch", "0"]));
    assert!(error.contains("--batch must be at least 1"), "{error}");
    assert!(!out.exists(), "no run directory after bad input");
}

#[test]
fn shards_merge_into_the_unsharded_run() {
    let _lock = model_lock();
    let reference = reference();
    let temp = tempfile::tempdir().unwrap();
    let shard = |i: usize| temp.path().join(format!("run-shard-{i}"));
    for i in 0..3 {
        succeed(&run_args(&shard(i), &["--shard", &format!("{i}/3")]));
        let indices: Vec<u64> = records(&shard(i))
            .iter()
            .map(|r| r["index"].as_u64().unwrap())
            .collect();
        assert_eq!(
            indices,
            (0..12).filter(|p| p % 3 == i as u64).collect::<Vec<_>>()
        );
    }
    let merge = |out: &Path, dirs: &[PathBuf]| -> Vec<String> {
        let mut args = vec![
            "merge".to_string(),
            "--out".into(),
            out.to_str().unwrap().into(),
        ];
        args.extend(dirs.iter().map(|d| d.to_str().unwrap().to_string()));
        args
    };
    let merged = temp.path().join("merged");
    succeed(&merge(&merged, &[shard(2), shard(0), shard(1)]));
    assert_eq!(timeless_lines(&merged), timeless_lines(reference));
    let (mut ours, mut theirs) = (manifest(&merged), manifest(reference));
    for manifest in [&mut ours, &mut theirs] {
        manifest.as_object_mut().unwrap().remove("created_unix_s");
    }
    assert_eq!(ours, theirs, "the merged manifest is the unsharded run's");

    let error = fail(&merge(
        &temp.path().join("m2"),
        &[shard(0), shard(1), shard(1), shard(2)],
    ));
    assert!(
        error.contains("are both shard 1/3: overlapping shards"),
        "{error}"
    );
    let error = fail(&merge(&temp.path().join("m3"), &[shard(0), shard(2)]));
    assert!(error.contains("missing shards: 1/3"), "{error}");
    let predictions = shard(1).join("predictions.jsonl");
    let text = std::fs::read_to_string(&predictions).unwrap();
    let first_line = &text[..=text.find('\n').unwrap()];
    std::fs::write(&predictions, first_line).unwrap();
    let error = fail(&merge(
        &temp.path().join("m4"),
        &[shard(0), shard(1), shard(2)],
    ));
    assert!(error.contains("is incomplete: 1 of 4 records"), "{error}");
    assert!(!temp.path().join("m2").exists() && !temp.path().join("m4").exists());
}

#[test]
fn long_texts_are_truncated_to_the_prompt_budget_and_counted() {
    let _lock = model_lock();
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("run");
    let logits_only = ["--signals", "logits", "--limit", "6"];
    let mut too_small = logits_only.to_vec();
    too_small.extend(["--max-prompt-tokens", "1"]);
    let error = fail(&run_args(&out, &too_small));
    assert!(!out.exists(), "{error}");
    let overhead: usize = error
        .split("(the templates take ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("template size in: {error}"));
    // Room for 5 text tokens after the 4 boundary tokens: every fixture text (8+ words) is cut.
    let limit = (overhead + 4 + 5).to_string();
    let mut small = logits_only.to_vec();
    small.extend(["--max-prompt-tokens", &limit]);
    succeed(&run_args(&out, &small));
    let manifest = manifest(&out);
    assert_eq!(manifest["settings"]["text_token_budget"], 5);
    assert_eq!(manifest["selection"]["truncated"], 6);
    for record in records(&out) {
        assert_eq!(record["truncated"], true);
        let prompt_tokens = record["logits"]["prompt_tokens"].as_u64().unwrap() as usize;
        assert!(prompt_tokens <= overhead + 4 + 5, "{prompt_tokens}");
        assert!(prompt_tokens > overhead, "{prompt_tokens}");
    }
}

/// The built-in label prompt of `manifest` filled for `text`, rendered here independently.
fn label_prompt_for(manifest: &Value, text: &str) -> String {
    let dataset = &manifest["dataset"];
    let labels: Vec<&str> = LABELS.to_vec();
    let lines: Vec<String> = labels
        .iter()
        .zip(dataset["label_descriptions"].as_array().unwrap())
        .map(|(name, description)| format!("- {name}: {}", description.as_str().unwrap()))
        .collect();
    manifest["prompts"]["label"]["text"]
        .as_str()
        .unwrap()
        .replace("{task}", dataset["task"].as_str().unwrap())
        .replace("{label_descriptions}", &lines.join("\n"))
        .replace("{labels}", &labels.join(", "))
        .replace("{text}", text)
}

#[test]
fn prefix_reuse_matches_scoring_from_scratch_and_falls_back_at_a_merged_boundary() {
    let _lock = model_lock();
    let reference = reference();
    let first = &records(reference)[0];
    let prompt = label_prompt_for(
        &manifest(reference),
        "i am so angry that they cancelled my flight again",
    );
    let output = candor(&[
        "score".into(),
        "--model".into(),
        model_path().to_str().unwrap().into(),
        "--chat".into(),
        "--json".into(),
        "--labels".into(),
        LABELS.join(","),
        "--answer-prefix".into(),
        manifest(reference)["prompts"]["label"]["answer_prefix"].as_str().unwrap().into(),
        "--prompt".into(),
        prompt,
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let scratch: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(first["logits"]["prompt_tokens"], scratch["prompt_tokens"]);
    for (reused, fresh) in first["logits"]["log_probs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(scratch["labels"].as_array().unwrap())
    {
        let (a, b) = (
            reused.as_f64().unwrap(),
            fresh["log_prob"].as_f64().unwrap(),
        );
        assert!(close(a, b, 1e-3), "reused prefix {a} vs from scratch {b}");
    }
    // "Text: {text}": the space before the text merges with its first word, so the shared prefix's
    // tokens are not a prefix of the example's and every example is prefilled whole.
    let temp = tempfile::tempdir().unwrap();
    let template = temp.path().join("label.txt");
    std::fs::write(&template, "{task} Labels: {labels}. Text: {text}").unwrap();
    let out = temp.path().join("run");
    let extra = ["--signals", "logits", "--limit", "2", "--label-prompt"];
    let mut args = run_args(&out, &extra);
    args.push(template.to_str().unwrap().into());
    succeed(&args);
    assert_eq!(
        manifest(&out)["prompts"]["label"]["source"],
        template.to_str().unwrap()
    );
    for record in records(&out) {
        assert_eq!(record["logits"]["prefix_reused"], false);
    }
}

/// Records of two runs that differ only in `--batch`: the same examples, texts, parsed answers,
/// chosen tokens and log-probabilities (within 1e-6 nats).
fn assert_same_records_up_to_rounding(a: &Path, b: &Path) {
    let (a, b) = (records(a), records(b));
    assert_eq!(a.len(), b.len());
    let mut largest: f64 = 0.0;
    for (x, y) in a.iter().zip(&b) {
        for field in ["index", "id", "gold", "truncated"] {
            assert_eq!(x[field], y[field], "{field}");
        }
        let (vx, vy) = (&x["verbalized"], &y["verbalized"]);
        assert_eq!(vx["raw_text"], vy["raw_text"]);
        assert_eq!(vx["parsed"], vy["parsed"]);
        for (nx, ny) in vx["numbers"].as_array().unwrap().iter().zip(vy["numbers"].as_array().unwrap()) {
            assert_eq!(nx["token_ids"], ny["token_ids"]);
            for key in ["log_prob", "masked_log_prob"] {
                largest = largest.max((nx[key].as_f64().unwrap() - ny[key].as_f64().unwrap()).abs());
            }
        }
        let (lx, ly) = (&x["logits"], &y["logits"]);
        assert_eq!(lx["token_counts"], ly["token_counts"]);
        for (p, q) in lx["log_probs"].as_array().unwrap().iter().zip(ly["log_probs"].as_array().unwrap()) {
            largest = largest.max((p.as_f64().unwrap() - q.as_f64().unwrap()).abs());
        }
    }
    // Steps of fewer than 32 rows (as here: 3 dicts of short pieces) go through dot kernels
    // whose sums do not depend on the other rows, so the numbers are in fact bit-identical.
    assert!(largest < 1e-6, "log-probabilities differ by {largest}");
}

#[test]
fn batched_runs_give_the_records_of_one_example_at_a_time() {
    let _lock = model_lock();
    let temp = tempfile::tempdir().unwrap();
    // Six labels (emotion) and two (reviews); groups of 3 leave a ragged last group, and the
    // prompts differ in length, so the dicts sit at different positions at every step.
    let reviews = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/datasets/reviews.jsonl");
    for (n, dataset) in ["emotion".to_string(), reviews.display().to_string()].iter().enumerate() {
        let args = |out: &Path, batch: &str| {
            let mut args = run_args(out, &["--verbalized", "constrained", "--max-fraction-digits", "1", "--limit", "5", "--batch", batch]);
            let spec = args.iter().position(|a| a == "--dataset").unwrap() + 1;
            args[spec] = dataset.clone();
            args
        };
        let (one, three) = (temp.path().join(format!("one-{n}")), temp.path().join(format!("three-{n}")));
        succeed(&args(&one, "1"));
        succeed(&args(&three, "3"));
        let without_time = |dir: &Path| {
            let mut m = manifest(dir);
            m.as_object_mut().unwrap().remove("created_unix_s");
            m
        };
        assert_eq!(without_time(&one), without_time(&three), "the batch size is not part of the manifest");
        assert_same_records_up_to_rounding(&one, &three);
    }
}

#[test]
fn dense_and_quantized_weights_give_the_same_records() {
    // A quantized product multiplies the dequantized values, the dense weights' own, in the
    // same order: the two storages give the same bits (prefill, label scoring, dicts).
    let _lock = model_lock();
    let temp = tempfile::tempdir().unwrap();
    let (dense, quantized) = (temp.path().join("dense"), temp.path().join("quantized"));
    let args = |out: &Path, weights: &str| run_args(out, &["--verbalized", "constrained", "--limit", "4", "--weights", weights]);
    succeed(&args(&dense, "dense"));
    succeed(&args(&quantized, "quantized"));
    assert_eq!(timeless_lines(&dense), timeless_lines(&quantized));
}

#[test]
fn every_kernel_build_gives_the_records_within_rounding() {
    // CANDOR_PORTABLE_KERNELS picks the plain build (1) or the AVX2 one on an AVX-512 CPU: the
    // fallback paths run end to end, and their numbers differ from the dispatched build's only
    // by f32 rounding (fused or separate multiply-adds).
    let _lock = model_lock();
    let temp = tempfile::tempdir().unwrap();
    let run = |name: &str, build: Option<&str>| {
        let out = temp.path().join(name);
        let mut command = Command::new(env!("CARGO_BIN_EXE_candor"));
        command.args(run_args(&out, &["--verbalized", "constrained", "--limit", "4"])).env("HF_HUB_OFFLINE", "1");
        match build {
            Some(build) => command.env("CANDOR_PORTABLE_KERNELS", build),
            None => command.env_remove("CANDOR_PORTABLE_KERNELS"),
        };
        let output = command.output().expect("run candor");
        assert!(output.status.success(), "{name}: {}", String::from_utf8_lossy(&output.stderr));
        records(&out)
    };
    let dispatched = run("dispatched", None);
    for build in ["1", "avx2"] {
        let other = run(build, Some(build));
        assert_eq!(dispatched.len(), other.len());
        for (a, b) in dispatched.iter().zip(&other) {
            assert_eq!(a["verbalized"]["parsed"], b["verbalized"]["parsed"], "build {build}");
            let pairs = a["logits"]["log_probs"].as_array().unwrap().iter().zip(b["logits"]["log_probs"].as_array().unwrap());
            for (p, q) in pairs {
                let (p, q) = (p.as_f64().unwrap(), q.as_f64().unwrap());
                assert!(close(p, q, 1e-4), "build {build}: label log-prob {p} vs {q}");
            }
        }
    }
}

#[test]
fn printed_prompts_are_the_ones_a_run_sends() {
    let _lock = model_lock();
    let temp = tempfile::tempdir().unwrap();
    let (ran, printed_out) = (temp.path().join("ran"), temp.path().join("printed"));
    succeed(&run_args(&ran, &["--limit", "4"]));
    let mut args = run_args(&printed_out, &["--limit", "4"]);
    args.push("--print-prompts".into());
    let output = candor(&args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(!printed_out.exists(), "--print-prompts writes nothing");
    let printed: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let records = records(&ran);
    assert_eq!(printed.len(), records.len());
    // The prompts tokenized by the model itself give the token counts the run recorded.
    let model = candor_infer::LanguageModel::load(
        &candor_infer::ModelSpec::Gguf(model_path()),
        &candor_infer::LoadOptions::default(),
    )
    .unwrap();
    let labels = manifest(&ran)["dataset"]["labels"].clone();
    for (prompts, record) in printed.iter().zip(&records) {
        assert_eq!(prompts["id"], record["id"]);
        assert_eq!(prompts["gold"], record["gold"]);
        for signal in ["verbalized", "logits"] {
            let key = if signal == "logits" { "label" } else { signal };
            let text = prompts[key].as_str().unwrap();
            assert_eq!(model.encode(text).unwrap().len() as u64, record[signal]["prompt_tokens"].as_u64().unwrap(), "{signal}");
        }
        assert!(prompts["label"].as_str().unwrap().ends_with("<|im_start|>assistant\nLabel:"));
        let continuations: Vec<String> =
            labels.as_array().unwrap().iter().map(|label| format!(" {}", label.as_str().unwrap())).collect();
        assert_eq!(prompts["label_continuations"], serde_json::json!(continuations));
    }
}

#[test]
fn a_base_model_prompt_starts_with_the_bos_its_tokenizer_asks_for() {
    // Gemma 3 270M is a base model without a chat template and wants BOS in front of a prompt
    // (tokenizer.ggml.add_bos_token): the plain fallback text does not write it, so the run
    // must add it, as llama.cpp does and as the float64 reference assumes.
    let gemma = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/gemma-3-270m-q4_k_m.gguf");
    assert!(gemma.exists(), "{} is missing: run scripts/fetch-model.sh gemma3-270m", gemma.display());
    let temp = tempfile::tempdir().unwrap();
    let with_gemma = |out: &Path, extra: &[&str]| -> Vec<String> {
        let mut args = run_args(out, extra);
        let at = args.iter().position(|a| a == "--model").unwrap() + 1;
        args[at] = gemma.to_str().unwrap().to_string();
        args
    };
    let ran = temp.path().join("ran");
    succeed(&with_gemma(&ran, &["--limit", "2", "--verbalized", "constrained"]));
    let mut args = with_gemma(&temp.path().join("printed"), &["--limit", "2", "--verbalized", "constrained"]);
    args.push("--print-prompts".into());
    let output = candor(&args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let model =
        candor_infer::LanguageModel::load(&candor_infer::ModelSpec::Gguf(gemma.clone()), &candor_infer::LoadOptions::default())
            .unwrap();
    let records = records(&ran);
    for (line, record) in String::from_utf8(output.stdout).unwrap().lines().zip(&records) {
        let prompts: Value = serde_json::from_str(line).unwrap();
        for (key, signal) in [("verbalized", "verbalized"), ("label", "logits")] {
            let text = prompts[key].as_str().unwrap();
            let recorded = record[signal]["prompt_tokens"].as_u64().unwrap() as usize;
            assert_eq!(recorded, model.encode(text).unwrap().len() + 1, "{signal}: the text's tokens and BOS");
            assert_eq!(model.encode_prompt(text).unwrap()[0], model.tokenizer().bos_token_id().unwrap());
        }
    }
    assert_eq!(records.len(), 2);
    // Without a chat template the templates go raw: no `user:` turn around them.
    assert_eq!(manifest(&ran)["settings"]["prompt_format"], "raw");
}

#[test]
fn prompt_format_raw_sends_the_templates_without_the_chat_turn() {
    let _lock = model_lock();
    let temp = tempfile::tempdir().unwrap();
    let print = |format: &[&str]| -> Vec<Value> {
        let mut args = run_args(&temp.path().join("unused"), &[&["--limit", "2"], format].concat());
        args.push("--print-prompts".into());
        let output = candor(&args);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let (chat, raw) = (print(&[]), print(&["--prompt-format", "raw"]));
    for (chat, raw) in chat.iter().zip(&raw) {
        let (chat_label, raw_label) = (chat["label"].as_str().unwrap(), raw["label"].as_str().unwrap());
        assert!(chat_label.starts_with("<|im_start|>system") && chat_label.ends_with("<|im_start|>assistant\nLabel:"));
        assert!(!raw_label.contains("<|im_start|>") && raw_label.ends_with("Label:"), "{raw_label}");
        // The raw prompt is the user's message of the chat one.
        let user_turn = raw_label.strip_suffix("Label:").unwrap();
        assert!(chat_label.contains(&format!("<|im_start|>user\n{user_turn}<|im_end|>")));
    }
    let ran = temp.path().join("raw");
    succeed(&run_args(&ran, &["--limit", "2", "--prompt-format", "raw"]));
    assert_eq!(manifest(&ran)["settings"]["prompt_format"], "raw");
    // Resuming the same directory with the other format is refused.
    let message = fail(&run_args(&ran, &["--limit", "2", "--prompt-format", "chat"]));
    assert!(message.contains("manifest"), "{message}");
}

fn reviews() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/datasets/reviews.jsonl")
}

/// The rows of the reviews fixture as (text, label), in file order (its blank line is no row).
fn review_rows() -> Vec<(String, String)> {
    std::fs::read_to_string(reviews())
        .unwrap()
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let row: Value = serde_json::from_str(line).unwrap();
            (row["text"].as_str().unwrap().to_string(), row["label"].as_str().unwrap().to_string())
        })
        .collect()
}

/// `candor run` on five of the six reviews with the default verbalized mode, plus `extra`.
fn reviews_run(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = default_mode_run_args(out, &[&["--limit", "5", "--max-fraction-digits", "1"], extra].concat());
    let spec = args.iter().position(|a| a == "--dataset").unwrap() + 1;
    args[spec] = reviews().to_str().unwrap().to_string();
    args
}

fn numbers(values: &Value) -> Vec<f64> {
    values.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

/// A constrained dict's parse: a distribution over `n_labels` labels, or (a small model's
/// all-zero dict) unparseable for that reason only.
fn assert_parsed_dict(parsed: &Value, n_labels: usize, signal: &str) {
    match parsed["probabilities"].as_array() {
        Some(_) => {
            let probabilities = numbers(&parsed["probabilities"]);
            assert_eq!(probabilities.len(), n_labels, "{signal}");
            assert!(close(probabilities.iter().sum(), 1.0, 1e-9), "{signal}");
        }
        None => assert_eq!(parsed["reason"], "all label values are zero", "{signal}: {parsed}"),
    }
}

/// `candor calibrate` on `run` without bootstrap; the signal names of its calibration.json.
fn calibrated_signals(run: &Path) -> Vec<(String, String)> {
    succeed(&["calibrate".into(), "--run".into(), run.to_str().unwrap().into(), "--bootstrap".into(), "0".into(), "--quiet".into()]);
    let results: Value = serde_json::from_str(&std::fs::read_to_string(run.join("calibration.json")).unwrap()).unwrap();
    results["signals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["signal"].as_str().unwrap().to_string(), s["input_kind"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn prompt_variants_are_signals_of_their_own_and_calibrate_lists_them() {
    let _lock = model_lock();
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("run");
    let variants = ["--elicitation", "kshot,permuted,distribution", "--kshot", "1", "--kshot-split", "train"];
    succeed(&reviews_run(&out, &variants));
    let manifest = manifest(&out);
    let labels: Vec<String> = manifest["dataset"]["labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().into()).collect();
    assert_eq!(manifest["settings"]["verbalized_mode"], "constrained", "constrained is the default");
    let elicitation = &manifest["settings"]["elicitation"];
    assert_eq!(elicitation["variants"], serde_json::json!(["distribution", "permuted", "kshot"]));
    assert_eq!(elicitation["permutation_seed"], manifest["dataset"]["seed"]);
    let records = records(&out);
    assert_eq!(records.len(), 5);
    // The one review outside the run is the only possible demonstration (a file's split is a
    // name: `train` is the same file, and the run's rows are excluded).
    let rows = review_rows();
    let run_rows: Vec<usize> =
        records.iter().map(|r| r["id"].as_str().unwrap().strip_prefix("reviews-").unwrap().parse().unwrap()).collect();
    for (record, &row) in records.iter().zip(&run_rows) {
        assert_eq!(record["gold"], rows[row].1.as_str(), "ids are reviews-<row>");
    }
    let outside = (0..rows.len()).find(|row| !run_rows.contains(row)).unwrap();
    let kshot = &elicitation["kshot"];
    assert_eq!((kshot["split"].as_str(), kshot["k"].as_u64()), (Some("train"), Some(1)));
    assert_eq!(kshot["demonstrations"], serde_json::json!([format!("train-{outside}")]));
    let one_hot: Vec<String> = labels
        .iter()
        .map(|label| format!("\"{label}\": {}", if *label == rows[outside].1 { "1.0" } else { "0.0" }))
        .collect();
    let demonstration = format!("Text:\n{}\nAnswer: {{{}}}\n\n", rows[outside].0, one_hot.join(", "));
    let kshot_text = manifest["prompts"]["variants"]["verbalized_kshot"]["text"].as_str().unwrap();
    let base = manifest["prompts"]["verbalized"]["text"].as_str().unwrap();
    assert!(kshot_text.ends_with(base), "{kshot_text}");
    // The template stores the demonstration with its braces escaped.
    let escaped = demonstration.replace('{', "{{").replace('}', "}}");
    assert!(kshot_text.contains(&escaped), "{kshot_text}");
    for record in &records {
        for signal in ["verbalized", "verbalized_permuted", "verbalized_kshot"] {
            let answer = &record[signal];
            assert_eq!(answer["mode"], "constrained", "{signal}");
            assert_parsed_dict(&answer["parsed"], labels.len(), signal);
        }
        // The demonstration's tokens come before the same prompt.
        assert!(record["verbalized_kshot"]["prompt_tokens"].as_u64() > record["verbalized"]["prompt_tokens"].as_u64());
        // The permuted dict's keys come in the recorded order; the parsed values are mapped
        // back to manifest order.
        let permuted = &record["verbalized_permuted"];
        let order: Vec<usize> = permuted["permutation"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as usize).collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..labels.len()).collect::<Vec<_>>());
        let dict_keys: Vec<&str> = permuted["numbers"].as_array().unwrap().iter().map(|n| n["label"].as_str().unwrap()).collect();
        let expected_keys: Vec<&str> = order.iter().map(|&i| labels[i].as_str()).collect();
        assert_eq!(dict_keys, expected_keys);
        let raw = numbers(&permuted["parsed"]["raw_values"]);
        for (position, &label) in order.iter().enumerate() {
            assert_eq!(raw[label], permuted["numbers"][position]["value"].as_f64().unwrap());
        }
        assert!(record["verbalized"].get("permutation").is_none());
    }
    let orders: std::collections::BTreeSet<String> = records.iter().map(|r| r["verbalized_permuted"]["permutation"].to_string()).collect();
    assert!(orders.len() > 1, "five examples, not all in one order: {orders:?}");
    assert_eq!(
        calibrated_signals(&out),
        [("verbalized", "probabilities"), ("verbalized_permuted", "probabilities"), ("verbalized_kshot", "probabilities"), ("logits", "logits")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    // Another set of variants is another run.
    let error = fail(&reviews_run(&out, &["--elicitation", "distribution"]));
    assert!(error.contains("settings.elicitation"), "{error}");
    let error = fail(&reviews_run(&temp.path().join("no-split"), &["--elicitation", "kshot"]));
    assert!(error.contains("--elicitation kshot needs --kshot-split"), "{error}");
}

#[test]
fn the_percent_variant_writes_whole_percentages_read_on_the_percent_scale() {
    let _lock = model_lock();
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("run");
    succeed(&reviews_run(&out, &["--elicitation", "percent"]));
    let manifest = manifest(&out);
    assert_eq!(manifest["settings"]["elicitation"]["variants"], serde_json::json!(["percent"]));
    let template = &manifest["prompts"]["variants"]["verbalized_percent"];
    assert_eq!(template["source"], "builtin:verbalized_percent");
    assert!(template["text"].as_str().unwrap().contains("the percentages summing to 100"));
    for record in records(&out) {
        assert!(record.get("verbalized").is_none(), "only the variants asked for");
        let answer = &record["verbalized_percent"];
        assert_eq!(answer["mode"], "constrained");
        let values: Vec<f64> = answer["numbers"].as_array().unwrap().iter().map(|n| n["value"].as_f64().unwrap()).collect();
        for value in &values {
            assert!(value.fract() == 0.0 && (0.0..=100.0).contains(value), "{value}");
        }
        // Read on the percent scale: the deviation is |Σ/100 − 1|, the distribution the values
        // over their sum.
        let parsed = &answer["parsed"];
        assert_eq!(parsed["scale"], "percent");
        let sum: f64 = values.iter().sum();
        match sum > 0.0 {
            true => {
                assert!(close(parsed["raw_sum_deviation"].as_f64().unwrap(), (sum / 100.0 - 1.0).abs(), 1e-12));
                for (p, value) in numbers(&parsed["probabilities"]).iter().zip(&values) {
                    assert!(close(*p, value / sum, 1e-12));
                }
            }
            false => assert_eq!(parsed["reason"], "all label values are zero"),
        }
    }
    assert_eq!(
        calibrated_signals(&out),
        [("verbalized_percent", "probabilities"), ("logits", "logits")].map(|(a, b)| (a.to_string(), b.to_string()))
    );
}

#[test]
fn the_top1_variant_writes_the_most_probable_label_key_and_its_confidence() {
    let _lock = model_lock();
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("run");
    succeed(&reviews_run(&out, &["--elicitation", "top1"]));
    let manifest = manifest(&out);
    let labels: Vec<String> = manifest["dataset"]["labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().into()).collect();
    assert_eq!(manifest["prompts"]["variants"]["verbalized_top1"]["source"], "builtin:verbalized_top1");
    for record in records(&out) {
        let answer = &record["verbalized_top1"];
        let key_log_probs = numbers(&answer["key_log_probs"]);
        assert_eq!(key_log_probs.len(), labels.len());
        assert!(key_log_probs.iter().all(|lp| *lp < 0.0));
        // The label is the most probable key, ties to the first.
        let best = key_log_probs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let chosen = key_log_probs.iter().position(|lp| *lp == best).unwrap();
        let number = &answer["numbers"].as_array().unwrap()[..];
        assert_eq!(number.len(), 1);
        assert_eq!(number[0]["label"], labels[chosen].as_str());
        let text = number[0]["text"].as_str().unwrap();
        assert_eq!(answer["raw_text"], format!("{{\"{}\": {text}}}", labels[chosen]));
        // c on the chosen label, (1 − c)/(K − 1) on each other.
        let confidence = number[0]["value"].as_f64().unwrap();
        let others = (1.0 - confidence) / (labels.len() - 1) as f64;
        assert_eq!(answer["parsed"]["status"], "ok");
        for (j, p) in numbers(&answer["parsed"]["probabilities"]).iter().enumerate() {
            assert!(close(*p, if j == chosen { confidence } else { others }, 1e-12), "{j}: {p}");
        }
    }
    assert_eq!(
        calibrated_signals(&out),
        [("verbalized_top1", "probabilities"), ("logits", "logits")].map(|(a, b)| (a.to_string(), b.to_string()))
    );
}

#[test]
fn the_sampled_variant_averages_seeded_samples_deterministically() {
    let _lock = model_lock();
    let temp = tempfile::tempdir().unwrap();
    let (out, again) = (temp.path().join("run"), temp.path().join("again"));
    let variant = ["--elicitation", "sampled", "--samples", "3", "--sample-temperature", "1.5"];
    succeed(&reviews_run(&out, &variant));
    succeed(&reviews_run(&again, &variant));
    assert_eq!(timeless_lines(&out), timeless_lines(&again), "the seed makes the samples deterministic");
    let manifest = manifest(&out);
    assert_eq!(
        manifest["settings"]["elicitation"]["sampled"],
        serde_json::json!({"samples": 3, "temperature": 1.5, "seed": manifest["dataset"]["seed"]})
    );
    let n_labels = manifest["dataset"]["labels"].as_array().unwrap().len();
    let mut texts = std::collections::BTreeSet::new();
    for record in records(&out) {
        let answer = &record["verbalized_sampled"];
        let samples = answer["samples"].as_array().unwrap();
        assert_eq!(samples.len(), 3);
        // The mean of the samples that parsed, computed here; the others are counted.
        let parsed: Vec<Vec<f64>> =
            samples.iter().filter(|s| s["parsed"]["probabilities"].is_array()).map(|s| numbers(&s["parsed"]["probabilities"])).collect();
        assert_eq!(answer["unparseable_samples"], 3 - parsed.len());
        let tokens: u64 = samples.iter().map(|s| s["generated_tokens"].as_u64().unwrap()).sum();
        assert_eq!(answer["generated_tokens"], tokens);
        for sample in samples {
            texts.insert(sample["raw_text"].as_str().unwrap().to_string());
            assert_parsed_dict(&sample["parsed"], n_labels, "sample");
        }
        match parsed.is_empty() {
            true => assert_eq!(answer["parsed"]["status"], "unparseable"),
            false => {
                for (j, p) in numbers(&answer["parsed"]["probabilities"]).iter().enumerate() {
                    let mean = parsed.iter().map(|d| d[j]).sum::<f64>() / parsed.len() as f64;
                    assert!(close(*p, mean, 1e-12), "{j}: {p} vs {mean}");
                }
            }
        }
    }
    assert!(texts.len() > 1, "fifteen samples at τ 1.5 are not all one dict: {texts:?}");
    assert_eq!(
        calibrated_signals(&out),
        [("verbalized_sampled", "probabilities"), ("logits", "logits")].map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let error = fail(&reviews_run(&temp.path().join("cold"), &["--elicitation", "sampled", "--sample-temperature", "0"]));
    assert!(error.contains("--sample-temperature must be above 0"), "{error}");
}
