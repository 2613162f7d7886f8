//! Gemma 3 270M (Q4_K_M GGUF: Q5_0, Q4_K, Q6_K and Q8_0 blocks, 262k vocabulary) against the
//! float64 numpy reference of `scripts/reference/gemma3_reference.py`
//! (`tests/fixtures/gemma3_reference.json`), in both weight storages: the logits at every
//! position of three prompts (logsumexp, the ten largest with their ids, a fixed set of ids)
//! within 1e-3, label log-probs within 1e-3 nats, and the 32-token greedy continuation
//! identical; for an 821-token prompt, past the 512-position sliding window of the local layers,
//! the logits from position 660 on (a chunk after a 660-token prefill) and 8 greedy tokens.
//!
//! The model comes from `scripts/fetch-model.sh gemma3-270m` (run by `scripts/test.sh`); a
//! missing file fails the test with that command.

use std::path::PathBuf;

use candor_infer::{LanguageModel, LoadOptions, ModelSpec, WeightStorage};
use serde_json::Value;

const TOLERANCE: f64 = 1e-3;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gemma3_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn numbers(value: &Value) -> Vec<f64> {
    value.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

fn ids(value: &Value) -> Vec<u32> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

fn load(weights: WeightStorage) -> LanguageModel {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/gemma-3-270m-q4_k_m.gguf"));
    assert!(path.exists(), "{} is missing: run scripts/fetch-model.sh gemma3-270m", path.display());
    let options = LoadOptions { weights: Some(weights), ..LoadOptions::default() };
    LanguageModel::load(&ModelSpec::Gguf(path), &options).unwrap()
}

fn logsumexp(row: &[f32]) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln()
}

/// Candor's logits rows against the reference's summaries of the same positions, the first
/// of them position `from`.
fn check_positions(what: &str, logits: &[Vec<f32>], reference: &Value, fixed: &[u32], from: usize) {
    let reference = reference.as_array().unwrap();
    assert_eq!(logits.len(), reference.len(), "{what}: positions");
    for (index, (row, want)) in logits.iter().zip(reference).enumerate() {
        let position = from + index;
        let at = |name: &str, got: f64, want: f64| {
            assert!((got - want).abs() < TOLERANCE, "{what} position {position} {name}: {got} vs reference {want}");
        };
        at("logsumexp", logsumexp(row), want["logsumexp"].as_f64().unwrap());
        for (id, value) in ids(&want["top_ids"]).iter().zip(numbers(&want["top_logits"])) {
            at(&format!("logit of {id}"), row[*id as usize] as f64, value);
        }
        for (id, value) in fixed.iter().zip(numbers(&want["fixed_logits"])) {
            at(&format!("logit of {id}"), row[*id as usize] as f64, value);
        }
    }
}

fn check_against_reference(weights: WeightStorage) {
    let fixture = fixture();
    let m = load(weights);
    assert_eq!(m.model().weight_storage(), weights);
    let fixed = ids(&fixture["fixed_ids"]);
    for prompt in fixture["prompts"].as_array().unwrap() {
        let text = prompt["text"].as_str().unwrap();
        let prompt_ids = ids(&prompt["ids"]);
        // Candor's own tokenization of the text gives llama.cpp's ids.
        assert_eq!(m.tokenizer().encode_prompt(text).unwrap(), prompt_ids, "{text:?}");
        let mut cache = m.model().new_cache();
        let logits: Vec<Vec<f32>> = m.model().forward(&prompt_ids, &mut cache).unwrap().to_vec2().unwrap();
        check_positions(&format!("{weights} {text:?}"), &logits, &prompt["positions"], &fixed, 0);
    }
    // Past the sliding window: a chunk after a long prefill, then greedy decode steps.
    let long = &fixture["long"];
    let long_ids = ids(&long["ids"]);
    let from = long["positions_from"].as_u64().unwrap() as usize;
    let mut cache = m.model().new_cache();
    m.model().forward(&long_ids[..from], &mut cache).unwrap();
    let logits: Vec<Vec<f32>> = m.model().forward(&long_ids[from..], &mut cache).unwrap().to_vec2().unwrap();
    check_positions(&format!("{weights} long prompt"), &logits, &long["positions"], &fixed, from);
    let answer = m.generate(&m.prefill(&long_ids).unwrap(), 8).unwrap();
    assert_eq!(answer.token_ids, ids(&long["greedy"]), "{weights} greedy continuation of the long prompt");
    let classification = fixture["prompts"].as_array().unwrap().last().unwrap();
    let prefix = m.prefill(&ids(&classification["ids"])).unwrap();
    let labels: Vec<String> = fixture["labels"].as_array().unwrap().iter().map(|l| l["label"].as_str().unwrap().to_string()).collect();
    let scores = m.score_labels(&prefix, &labels).unwrap();
    for (score, want) in scores.labels.iter().zip(fixture["labels"].as_array().unwrap()) {
        assert_eq!(score.token_ids, ids(&want["ids"]), "{weights} label {:?} tokens in context", score.label);
        let reference = want["log_prob"].as_f64().unwrap();
        assert!((score.log_prob - reference).abs() < TOLERANCE, "{weights} label {:?}: {} vs reference {reference}", score.label, score.log_prob);
    }
    let first = &fixture["prompts"][0];
    let answer = m.generate(&m.prefill(&ids(&first["ids"])).unwrap(), 32).unwrap();
    assert_eq!(answer.token_ids, ids(&fixture["greedy"]["ids"]), "{weights} greedy continuation");
}

#[test]
fn gemma3_quantized_storage_matches_the_float64_reference() {
    check_against_reference(WeightStorage::Quantized);
}

#[test]
fn gemma3_dense_storage_matches_the_float64_reference() {
    check_against_reference(WeightStorage::Dense);
}

/// Log-probability of `ids` following `context`, one full prefill per token (no reuse).
fn naive_log_prob(m: &LanguageModel, context: &[u32], ids: &[u32]) -> f64 {
    let mut context = context.to_vec();
    let mut total = 0.0;
    for &id in ids {
        total += m.prefill(&context).unwrap().next_log_probs().unwrap()[id as usize];
        context.push(id);
    }
    total
}

#[test]
fn gemma3_constrained_dict_pieces_are_tokenized_in_context() {
    // SentencePiece merges across the whole text: every piece of the dict is tokenized as it
    // follows the prompt and the numbers before it, and each number's log-prob is that of its
    // tokens after exactly those ids.
    let m = load(WeightStorage::Quantized);
    let fixture = fixture();
    let prompt_ids = ids(&fixture["prompts"].as_array().unwrap().last().unwrap()["ids"]);
    let labels = vec!["joy".to_string(), "sadness".to_string()];
    let dict = m.generate_constrained(&m.prefill(&prompt_ids).unwrap(), &labels, &Default::default()).unwrap();
    let parsed: Value = serde_json::from_str(&dict.text).unwrap();
    let keys: Vec<&String> = parsed.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["joy", "sadness"], "{}", dict.text);
    let tok = m.tokenizer();
    let prompt_text = tok.decode(&prompt_ids[1..]).unwrap();
    let mut context = prompt_ids.clone();
    let mut text_so_far = String::new();
    for (number, piece) in dict.numbers.iter().zip(["{\"joy\": ", ", \"sadness\": "]) {
        let piece_ids = tok.encode_after_text(&format!("{prompt_text}{text_so_far}"), piece).unwrap();
        context.extend(&piece_ids);
        text_so_far.push_str(piece);
        let naive = naive_log_prob(&m, &context, &number.token_ids);
        assert!((number.log_prob - naive).abs() < 1e-4, "{}: {} vs naive {naive}", number.label, number.log_prob);
        context.extend(&number.token_ids);
        text_so_far.push_str(&number.text);
    }
}

#[test]
fn gemma3_dict_after_a_prompt_ending_in_a_parenthesis_retokenizes_across_the_boundary() {
    // Regression: IMDB reviews ending in ")" (raw prompts: the text ends the prompt) stopped
    // the run, as `)` and `{"` merge in context. The prompt's last token and the first piece are tokenized
    // together, as the model reads the text; the first number's log-prob is that of its
    // tokens after exactly those ids.
    let m = load(WeightStorage::Quantized);
    let tok = m.tokenizer();
    let prompt_text = "Cheap beer and worse wine => not recommended at all (2/10)";
    let prompt_ids = tok.encode_prompt(prompt_text).unwrap();
    let piece = "{\"negative\": ";
    assert!(tok.encode_after(&prompt_ids, piece).is_err(), "the case needs a token across the boundary");
    let labels = vec!["negative".to_string(), "positive".to_string()];
    let dict = m.generate_constrained(&m.prefill(&prompt_ids).unwrap(), &labels, &Default::default()).unwrap();
    let first = &dict.numbers[0];
    let context = tok.encode_prompt(&format!("{prompt_text}{piece}")).unwrap();
    let naive = naive_log_prob(&m, &context, &first.token_ids);
    assert!((first.log_prob - naive).abs() < 1e-4, "{} vs naive {naive}", first.log_prob);
    assert!(dict.text.starts_with(piece), "{}", dict.text);
}
