//! `candor serve` and `candor run --model http://…` end to end, over real HTTP on the real
//! default model (SmolLM2-135M-Instruct Q4_1, fetched by `scripts/fetch-default-model.sh`; these
//! tests fail when it is absent): the served run's records against the local run's (label
//! log-probs, identical verbalized text) with requests in flight; a server killed mid-run
//! fails the run cleanly and, restarted, lets it resume to the uninterrupted run's records;
//! lm-evaluation-harness's request shape (`echo`, `max_tokens: 1`, `logprobs: 1`, summing
//! `token_logprobs[ctxlen:-1]`) gives `candor score`'s exact label log-probs; bad requests get
//! OpenAI-shaped errors; elicitation variants a served model cannot do exactly are refused
//! before a run directory exists. Tests run one at a time: two model processes oversubscribe a small
//! machine's cores.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Label log-probs of the served run against the local run's: the served backend tells
/// `candor serve` how it chunked each prompt (shared instruction head, then the example), so
/// the server computes what the local run computes.
const SERVED_TOLERANCE: f64 = 1e-6;

fn model_path() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(path.exists(), "{} is absent: run scripts/fetch-default-model.sh (scripts/test.sh does)", path.display());
    path
}

fn dataset_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/run/data")
}

fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A `candor serve` child process, killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// Starts `candor serve` on `port` (0: any) and waits for its "listening" line.
    fn start(port: u16) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_candor"))
            .args(["serve", "--model", model_path().to_str().unwrap(), "--port", &port.to_string(), "--served-model-name", "smol"])
            .stderr(Stdio::piped())
            .spawn()
            .expect("start candor serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let line = lines.next().expect("a line from candor serve").unwrap();
        let port = line
            .rsplit_once("127.0.0.1:")
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `POST path` with `body`: the status and the JSON answer (a plain HTTP/1.1 exchange).
    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let body = body.to_string();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let body = match head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            true => unchunk(body),
            false => body.to_string(),
        };
        (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The body of a chunked HTTP/1.1 response.
fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

fn candor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_candor")).args(args).env("HF_HUB_OFFLINE", "1").output().expect("run candor")
}

fn succeed(args: &[&str]) -> Output {
    let output = candor(args);
    assert!(output.status.success(), "candor {args:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    output
}

/// `candor run` on the fixture dataset into `out` with the model `model`, plus `extra`.
fn run_args<'a>(model: &'a str, out: &'a str, data: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run", "--model", model, "--dataset", "emotion", "--data-dir", data, "--out", out, "--verbalized", "constrained", "--quiet"];
    args.extend_from_slice(extra);
    args
}

fn records(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("predictions.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Records without their timing.
fn untimed(dir: &Path) -> Vec<Value> {
    records(dir)
        .into_iter()
        .map(|mut r| {
            r.as_object_mut().unwrap().remove("elapsed_ms");
            r
        })
        .collect()
}

fn floats(value: &Value) -> Vec<f64> {
    value.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

#[test]
fn a_served_run_gives_the_local_runs_records_and_resumes_after_the_server_dies() {
    let _lock = one_at_a_time();
    let model = model_path();
    let dir = tempfile::tempdir().unwrap();
    let data = dataset_dir();
    let (data, local, served, resumed) = (
        data.to_str().unwrap(),
        dir.path().join("local"),
        dir.path().join("served"),
        dir.path().join("resumed"),
    );
    succeed(&run_args(model.to_str().unwrap(), local.to_str().unwrap(), data, &[]));
    let mut server = Server::start(0);
    let url = server.url();
    let output = succeed(&run_args(&url, served.to_str().unwrap(), data, &["--concurrency", "4"]));
    let summary = String::from_utf8_lossy(&output.stderr);
    assert!(summary.contains("0 failed") && summary.contains("0 constrained answers broke their schema"), "{summary}");

    let (local_records, served_records) = (records(&local), records(&served));
    assert_eq!(local_records.len(), 12);
    assert_eq!(served_records.len(), 12);
    for (l, s) in local_records.iter().zip(&served_records) {
        assert_eq!(s["backend"], "candor");
        assert_eq!(l["backend"], "local");
        assert_eq!((&l["id"], &l["gold"]), (&s["id"], &s["gold"]));
        assert_eq!(l["verbalized"]["raw_text"], s["verbalized"]["raw_text"], "example {}", l["id"]);
        assert_eq!(l["verbalized"]["parsed"], s["verbalized"]["parsed"]);
        assert_eq!(l["verbalized"]["prompt_tokens"], s["verbalized"]["prompt_tokens"]);
        for key in ["log_probs", "first_token_log_probs", "probabilities"] {
            for (a, b) in floats(&l["logits"][key]).iter().zip(floats(&s["logits"][key])) {
                assert!((a - b).abs() < SERVED_TOLERANCE, "example {} {key}: local {a}, served {b}", l["id"]);
            }
        }
        assert_eq!(l["logits"]["token_counts"], s["logits"]["token_counts"]);
        assert_eq!(l["logits"]["prompt_tokens"], s["logits"]["prompt_tokens"]);
    }
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(served.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["model"]["server"]["engine"], "candor");
    assert_eq!(manifest["model"]["server"]["model"], "smol");
    let local_manifest: Value = serde_json::from_str(&std::fs::read_to_string(local.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["model"]["server"]["revision"], local_manifest["model"]["weights"]["sha256"]);

    // Kill the server once the interrupted run has written a record or two.
    let port = server.port;
    let interrupted = Command::new(env!("CARGO_BIN_EXE_candor"))
        .args(run_args(&url, resumed.to_str().unwrap(), data, &["--concurrency", "1", "--batch", "1", "--retries", "1"]))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::fs::read_to_string(resumed.join("predictions.jsonl")).map_or(0, |t| t.lines().count()) < 2 {
        assert!(started.elapsed() < Duration::from_secs(120), "the served run wrote no records");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.kill();
    let failed = interrupted.wait_with_output().unwrap();
    let message = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "the run went on without its server");
    assert!(message.contains(&format!("127.0.0.1:{port}")) && message.contains("attempts"), "{message}");
    let written = records(&resumed).len();
    assert!((2..12).contains(&written), "{written} records before the kill");

    let _server = Server::start(port);
    succeed(&run_args(&url, resumed.to_str().unwrap(), data, &["--concurrency", "1", "--batch", "1"]));
    assert_eq!(untimed(&resumed), untimed(&served));
}

#[test]
fn lm_evaluation_harness_requests_get_candor_scores_exact_log_probs() {
    let _lock = one_at_a_time();
    let model = model_path();
    let server = Server::start(0);
    let context = "I finally got the job I wanted, so today I feel";
    let labels = [" joy", " sadness", " anger"];
    let output = succeed(&["score", "--model", model.to_str().unwrap(), "--prompt", context, "--labels", &labels.join(","), "--json"]);
    let exact: Value = serde_json::from_slice(&output.stdout).unwrap();
    // The harness tokenizes context and continuation, sends their ids with echo and sums the
    // continuation's token log-probs (the last entry is the generated token).
    let (_, tokenized) = server.post("/tokenize", &json!({ "model": "smol", "prompt": context, "add_special_tokens": false }));
    let context_len = tokenized["tokens"].as_array().unwrap().len();
    for (i, label) in labels.iter().enumerate() {
        let (_, whole) = server.post("/tokenize", &json!({ "model": "smol", "prompt": format!("{context}{label}"), "add_special_tokens": false }));
        let (status, answer) = server.post(
            "/v1/completions",
            &json!({ "model": "smol", "prompt": whole["tokens"], "max_tokens": 1, "temperature": 0, "logprobs": 1, "echo": true, "seed": 1234 }),
        );
        assert_eq!(status, 200, "{answer}");
        let token_logprobs = &answer["choices"][0]["logprobs"]["token_logprobs"];
        let entries = token_logprobs.as_array().unwrap();
        assert_eq!(entries.len(), whole["tokens"].as_array().unwrap().len() + 1);
        assert!(entries[0].is_null());
        let summed: f64 = entries[context_len..entries.len() - 1].iter().map(|v| v.as_f64().unwrap()).sum();
        let expected = exact["labels"][i]["log_prob"].as_f64().unwrap_or_else(|| panic!("no log_prob in {exact}"));
        assert!((summed - expected).abs() < SERVED_TOLERANCE, "{label}: harness sum {summed}, candor score {expected}");
    }
}

#[test]
fn bad_requests_get_openai_shaped_errors() {
    let _lock = one_at_a_time();
    model_path();
    let server = Server::start(0);
    let cases = [
        (json!({ "model": "other", "prompt": "a" }), 404, "does not exist"),
        (json!({ "model": "smol", "prompt": "a", "temperature": 0.7 }), 400, "temperature"),
        (json!({ "model": "smol", "prompt": "a", "stream": true }), 400, "stream"),
        (json!({ "model": "smol", "prompt": [[1, 2], [999999]] }), 400, "outside the vocabulary"),
        (json!({ "model": "smol", "prompt": "a", "max_tokens": 100000 }), 400, "context window"),
        (json!({ "model": "smol", "prompt": "a", "response_format": { "type": "json_schema", "json_schema": { "name": "d", "schema": { "type": "object", "properties": { "x": { "type": "string" } }, "required": ["x"], "additionalProperties": false } } } }), 400, "not a number"),
        (json!({ "model": "smol" }), 400, "request body"),
    ];
    for (body, status, needle) in cases {
        let (got, answer) = server.post("/v1/completions", &body);
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(got, status, "{body}: {answer}");
        assert!(message.contains(needle), "{body}: {message}");
        assert_eq!(answer["error"]["code"], status);
    }
    let (status, answer) = server.post("/v1/chat/completions", &json!({ "model": "smol", "messages": [{ "role": "system", "content": "x" }] }));
    assert_eq!(status, 400, "{answer}");
}

#[test]
fn an_unreachable_server_is_a_clear_error_and_leaves_no_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let data = dataset_dir();
    // Port 9 (discard) has no HTTP server on a test machine.
    let output = candor(&run_args("http://127.0.0.1:9/v1", out.to_str().unwrap(), data.to_str().unwrap(), &["--retries", "1"]));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(message.contains("http://127.0.0.1:9/v1/models") && message.contains("2 attempts"), "{message}");
    assert!(!out.exists(), "a run directory was created for a server that never answered");
}

#[test]
fn elicitations_a_served_model_cannot_do_exactly_are_refused_naming_variant_and_engine() {
    let _one = one_at_a_time();
    let server = Server::start(0);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (url, data) = (server.url(), dataset_dir());
    let refused = |extra: &[&str]| -> String {
        let output = candor(&run_args(&url, out.to_str().unwrap(), data.to_str().unwrap(), extra));
        assert!(!output.status.success(), "{extra:?} ran on a served model");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let message = refused(&["--elicitation", "distribution,sampled"]);
    assert!(message.contains("--elicitation sampled needs seeded temperature sampling, which the candor backend does not offer"), "{message}");
    let message = refused(&["--elicitation", "percent"]);
    assert!(message.contains("--elicitation percent with --verbalized constrained needs constrained whole percentages, which the candor backend does not offer"), "{message}");
    assert!(!out.exists(), "a refused run leaves no run directory");
}
