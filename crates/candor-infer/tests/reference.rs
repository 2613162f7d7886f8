//! candor-infer against an independent float64 reference on the real default model.
//!
//! `tests/fixtures/smollm2_reference.json` is written by `scripts/reference/make_fixtures.py`:
//! a numpy float64 forward over the GGUF tensors (dequantized by llama.cpp's `gguf` package) and
//! a pure-Python BPE tokenizer + jinja2 chat renderer, none of which share code with this crate.
//! These tests load SmolLM2-135M-Instruct (Q4_1 GGUF) through the public API and check tokens,
//! chat text, label log-probs, every position's logits and the greedy answer against it, with
//! the weights dequantized to f32 at load and with them kept quantized (dequantized per row
//! inside each product): both must match the float64 reference.
//!
//! The model file must be present (`scripts/fetch-default-model.sh`; `scripts/test.sh` runs it
//! first). When it is missing the tests fail with that instruction rather than pass silently.

use std::path::PathBuf;
use std::sync::OnceLock;

use candor_infer::{ChatMessage, LanguageModel, LoadOptions, ModelSpec, StopReason, WeightStorage};
use serde::Deserialize;

/// Label log-probs (total, first-token) and outside mass: nats / probability.
const LOG_PROB_TOLERANCE: f64 = 1e-3;
/// Raw logits and per-row log-sum-exp. The f32 forward is expected well inside this.
const LOGIT_TOLERANCE: f64 = 2e-3;

const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(Deserialize)]
struct Fixture {
    provenance: Provenance,
    tokenizer: Vec<TokenizerCase>,
    chat: Vec<ChatCase>,
    label_scoring: Vec<ScoringCase>,
    greedy: Vec<GreedyCase>,
    logits_ids: Vec<u32>,
    logits: Vec<LogitsRow>,
}

#[derive(Deserialize)]
struct Provenance {
    model_file: String,
    model_sha256: String,
}

#[derive(Deserialize)]
struct TokenizerCase {
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct ChatCase {
    messages: Vec<ChatMessage>,
    add_generation_prompt: bool,
    text: String,
}

#[derive(Deserialize)]
struct ScoringCase {
    name: String,
    messages: Vec<ChatMessage>,
    prompt_ids: Vec<u32>,
    labels: Vec<ReferenceLabel>,
    outside_mass: f64,
}

#[derive(Deserialize)]
struct ReferenceLabel {
    label: String,
    ids: Vec<u32>,
    logprob: f64,
    first_token_logprob: f64,
}

#[derive(Deserialize)]
struct GreedyCase {
    messages: Vec<ChatMessage>,
    prompt_ids: Vec<u32>,
    answer_ids: Vec<u32>,
    answer_text: String,
    stop_id: u32,
}

#[derive(Deserialize)]
struct LogitsRow {
    position: usize,
    top_ids: Vec<u32>,
    top_logits: Vec<f64>,
    logsumexp: f64,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2_reference.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not a valid fixture: {e}", path.display()))
    })
}

/// Both weight storages, for the tests of the numbers.
const STORAGES: [WeightStorage; 2] = [WeightStorage::Dense, WeightStorage::Quantized];

/// The default model with dense weights, loaded once for all tests of this file.
fn model() -> &'static LanguageModel {
    model_with(WeightStorage::Dense)
}

/// The default model with the given weight storage, loaded once per storage.
fn model_with(storage: WeightStorage) -> &'static LanguageModel {
    static DENSE: OnceLock<LanguageModel> = OnceLock::new();
    static QUANTIZED: OnceLock<LanguageModel> = OnceLock::new();
    let cell = match storage {
        WeightStorage::Dense => &DENSE,
        WeightStorage::Quantized => &QUANTIZED,
    };
    cell.get_or_init(|| {
        let fixture = fixture();
        assert_eq!(fixture.provenance.model_file, MODEL_FILE, "fixture was made for another model");
        let models_dir = std::env::var_os("CANDOR_MODELS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"));
        let path = models_dir.join(MODEL_FILE);
        assert!(
            path.is_file(),
            "the default model is missing at {}: run scripts/fetch-default-model.sh (expected sha256 {})",
            path.display(),
            fixture.provenance.model_sha256
        );
        let options = LoadOptions {
            weights: Some(storage),
            ..LoadOptions::default()
        };
        let model = LanguageModel::load(&ModelSpec::Gguf(path.clone()), &options)
            .unwrap_or_else(|e| panic!("loading {} failed: {e}", path.display()));
        assert_eq!(model.model().weight_storage(), storage, "storage in use");
        model
    })
}

fn assert_close(what: &str, actual: f64, expected: f64, tolerance: f64) -> f64 {
    let deviation = (actual - expected).abs();
    assert!(
        deviation <= tolerance,
        "{what}: got {actual}, float64 reference {expected} (|diff| {deviation:.2e} > {tolerance:.0e})"
    );
    deviation
}

#[test]
fn tokenizer_ids_match_independent_tokenizer_and_round_trip() {
    let tokenizer = model().tokenizer();
    for case in &fixture().tokenizer {
        let ids = tokenizer.encode(&case.text).expect("encode");
        assert_eq!(ids, case.ids, "token ids of {:?}", case.text);
        let decoded = tokenizer.decode(&case.ids).expect("decode");
        assert_eq!(decoded, case.text, "decode of the ids of {:?}", case.text);
    }
}

#[test]
fn chat_template_renders_like_jinja2() {
    for case in &fixture().chat {
        let text = model()
            .render_chat(&case.messages, case.add_generation_prompt)
            .expect("render chat");
        assert_eq!(text, case.text, "rendering of {:?}", case.messages);
    }
}

#[test]
fn label_scores_match_float64_reference() {
    for storage in STORAGES {
        label_scores_match_float64_reference_with(storage);
    }
}

fn label_scores_match_float64_reference_with(storage: WeightStorage) {
    let model = model_with(storage);
    let mut worst = [0.0f64; 3];
    for case in &fixture().label_scoring {
        let prompt = model
            .render_chat(&case.messages, true)
            .expect("render chat");
        let prompt_ids = model.encode(&prompt).expect("encode prompt");
        assert_eq!(prompt_ids, case.prompt_ids, "{}: prompt tokens", case.name);
        let prefix = model.prefill(&prompt_ids).expect("prefill");
        let labels: Vec<String> = case.labels.iter().map(|l| l.label.clone()).collect();
        let scores = model.score_labels(&prefix, &labels).expect("score labels");
        assert_eq!(
            scores.labels.len(),
            case.labels.len(),
            "{}: one score per label",
            case.name
        );
        for (got, want) in scores.labels.iter().zip(&case.labels) {
            let what = format!("{storage}: {} / {:?}", case.name, want.label);
            assert_eq!(got.label, want.label, "{what}: label order");
            assert_eq!(got.token_ids, want.ids, "{what}: label tokens");
            let total = assert_close(
                &format!("{what}: log-prob"),
                got.log_prob,
                want.logprob,
                LOG_PROB_TOLERANCE,
            );
            let first = assert_close(
                &format!("{what}: first-token log-prob"),
                got.first_token_log_prob,
                want.first_token_logprob,
                LOG_PROB_TOLERANCE,
            );
            worst[0] = worst[0].max(total);
            worst[1] = worst[1].max(first);
        }
        let outside = assert_close(
            &format!("{}: outside mass", case.name),
            scores.first_token_mass_outside,
            case.outside_mass,
            LOG_PROB_TOLERANCE,
        );
        worst[2] = worst[2].max(outside);
    }
    eprintln!(
        "{storage} weights: label scoring, max |diff| vs float64: log-prob {:.2e}, first-token {:.2e}, outside mass {:.2e}",
        worst[0], worst[1], worst[2]
    );
}

#[test]
fn shared_prefix_reuse_gives_the_same_label_scores() {
    // The prompts without their own system message all start with the template's default
    // system turn and the user header; computing that once and extending it per example must
    // give the float64 values too.
    for storage in STORAGES {
        shared_prefix_reuse_gives_the_same_label_scores_with(storage);
    }
}

fn shared_prefix_reuse_gives_the_same_label_scores_with(storage: WeightStorage) {
    let model = model_with(storage);
    let cases: Vec<&ScoringCase> = fixture()
        .label_scoring
        .iter()
        .filter(|c| c.messages.iter().all(|m| m.role != "system"))
        .collect();
    assert!(
        cases.len() >= 2,
        "fixture needs two scoring cases without a system message"
    );
    let shared = cases
        .iter()
        .map(|c| c.prompt_ids.as_slice())
        .reduce(|a, b| &a[..a.iter().zip(b).take_while(|(x, y)| x == y).count()])
        .expect("cases checked above");
    assert!(
        shared.len() >= 20,
        "scoring prompts share only {} tokens",
        shared.len()
    );
    let header = model.prefill(shared).expect("prefill shared header");
    for case in cases {
        let prefix = model
            .extend(&header, &case.prompt_ids[shared.len()..])
            .expect("extend");
        assert_eq!(
            prefix.tokens(),
            case.prompt_ids.as_slice(),
            "{}: prefix tokens",
            case.name
        );
        let labels: Vec<String> = case.labels.iter().map(|l| l.label.clone()).collect();
        let scores = model.score_labels(&prefix, &labels).expect("score labels");
        for (got, want) in scores.labels.iter().zip(&case.labels) {
            let what = format!(
                "{storage}: {} / {:?} after a reused header",
                case.name, want.label
            );
            assert_close(&what, got.log_prob, want.logprob, LOG_PROB_TOLERANCE);
        }
        assert_close(
            &format!("{}: outside mass after a reused header", case.name),
            scores.first_token_mass_outside,
            case.outside_mass,
            LOG_PROB_TOLERANCE,
        );
    }
}

/// Compare rows of `[seq, vocab]` logits with the reference rows, position by position;
/// returns the largest deviation seen.
fn compare_logit_rows(what: &str, rows: &[Vec<f32>], reference: &[LogitsRow]) -> f64 {
    assert_eq!(rows.len(), reference.len(), "{what}: number of positions");
    let mut worst = 0.0f64;
    for (row, want) in rows.iter().zip(reference) {
        let max = row
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let lse = max
            + row
                .iter()
                .map(|&v| (f64::from(v) - max).exp())
                .sum::<f64>()
                .ln();
        let at = format!("{what}: position {}", want.position);
        worst = worst.max(assert_close(
            &format!("{at} log-sum-exp"),
            lse,
            want.logsumexp,
            LOGIT_TOLERANCE,
        ));
        for (&id, &logit) in want.top_ids.iter().zip(&want.top_logits) {
            let got = f64::from(row[id as usize]);
            worst = worst.max(assert_close(
                &format!("{at} logit of token {id}"),
                got,
                logit,
                LOGIT_TOLERANCE,
            ));
        }
        // The reference's best token must be ours too unless the runner-up is within tolerance.
        let argmax = (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best });
        let margin = want.top_logits[0] - want.top_logits[1];
        if margin > 2.0 * LOGIT_TOLERANCE {
            assert_eq!(argmax as u32, want.top_ids[0], "{at}: argmax");
        }
    }
    worst
}

#[test]
fn logits_match_float64_reference_at_every_position() {
    for storage in STORAGES {
        logits_match_float64_reference_with(storage);
    }
}

fn logits_match_float64_reference_with(storage: WeightStorage) {
    let model = model_with(storage);
    let fixture = fixture();
    let ids = &fixture.logits_ids;
    let mut cache = model.model().new_cache();
    let logits = model.model().forward(ids, &mut cache).expect("forward");
    let rows: Vec<Vec<f32>> = logits.to_vec2().expect("logits as rows");
    let worst = compare_logit_rows(&format!("{storage}: one chunk"), &rows, &fixture.logits);

    // The same sequence in two chunks through the KV cache must agree with the reference too.
    let split = ids.len() / 2;
    let mut cache = model.model().new_cache();
    let mut chunked: Vec<Vec<f32>> = model
        .model()
        .forward(&ids[..split], &mut cache)
        .expect("chunk 1")
        .to_vec2()
        .expect("rows");
    chunked.extend(
        model
            .model()
            .forward(&ids[split..], &mut cache)
            .expect("chunk 2")
            .to_vec2::<f32>()
            .expect("rows"),
    );
    let worst_chunked =
        compare_logit_rows(&format!("{storage}: two chunks"), &chunked, &fixture.logits);
    eprintln!(
        "{storage} weights: logits over {} positions, max |diff| vs float64: one chunk {worst:.2e}, two chunks {worst_chunked:.2e}",
        ids.len()
    );
}

#[test]
fn greedy_answer_matches_reference() {
    for storage in STORAGES {
        greedy_answer_matches_reference_with(storage);
    }
}

fn greedy_answer_matches_reference_with(storage: WeightStorage) {
    let model = model_with(storage);
    let case = &fixture().greedy[0];
    let prompt = model
        .render_chat(&case.messages, true)
        .expect("render chat");
    let prompt_ids = model.encode(&prompt).expect("encode");
    assert_eq!(prompt_ids, case.prompt_ids, "prompt tokens");
    let prefix = model.prefill(&prompt_ids).expect("prefill");
    let generation = model.generate(&prefix, 32).expect("generate");
    let expected_ids: Vec<u32> = case
        .answer_ids
        .iter()
        .copied()
        .filter(|&id| id != case.stop_id)
        .collect();
    assert_eq!(
        generation.token_ids, expected_ids,
        "{storage}: greedy token ids"
    );
    assert_eq!(generation.text, case.answer_text);
    assert_eq!(generation.stop_reason, StopReason::Eos);
    assert_eq!(generation.text, "The capital of France is Paris.");
}
