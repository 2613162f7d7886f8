//! Tests against the real default model (SmolLM2-135M-Instruct Q4_1 GGUF, fetched by
//! `scripts/fetch-default-model.sh`): tokenizer ids, chat template, greedy answer, cache and
//! batch equivalences, label log-probs against a naive token-by-token computation, constrained
//! generation, the dense export round trip, and error cases. Each test skips with a message
//! when the model file is absent.

use std::path::PathBuf;
use std::sync::OnceLock;

use candor_infer::{ChatMessage, LanguageModel, LoadOptions, ModelSpec};

fn model_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The loaded default model, shared by all tests of this file; `None` (with a message) when
/// the file has not been fetched.
fn model() -> Option<&'static LanguageModel> {
    static MODEL: OnceLock<Option<LanguageModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = model_path();
            if !path.exists() {
                eprintln!("SKIP: {} is absent; run scripts/fetch-default-model.sh", path.display());
                return None;
            }
            Some(LanguageModel::load(&ModelSpec::Gguf(path), &LoadOptions::default()).expect("load default model"))
        })
        .as_ref()
}

#[test]
fn tokenizer_splits_digits_without_prefix_space() {
    let Some(m) = model() else { return };
    let tok = m.tokenizer();
    let ids = tok.encode("Hello world 12345").unwrap();
    let pieces: Vec<String> = ids.iter().map(|&i| tok.id_to_token(i).unwrap()).collect();
    assert_eq!(pieces, ["Hello", "Ġworld", "Ġ", "1", "2", "3", "4", "5"]);
    assert_eq!(tok.decode(&ids).unwrap(), "Hello world 12345");
}

#[test]
fn special_tokens_are_whole_tokens_and_round_trip() {
    let Some(m) = model() else { return };
    let tok = m.tokenizer();
    let text = "<|im_start|>user\nCafé ünïcödé — 3.14 ✓<|im_end|>\n";
    let ids = tok.encode(text).unwrap();
    assert_eq!(ids[0], tok.token_to_id("<|im_start|>").unwrap());
    assert_eq!(ids[0], 1);
    assert!(ids.contains(&2), "<|im_end|> (id 2) matched as one token: {ids:?}");
    assert_eq!(tok.decode(&ids).unwrap(), text);
    assert_eq!(tok.eos_token_ids(), [2]);
    assert_eq!(tok.bos_token_id(), Some(1));
}

#[test]
fn smollm_template_adds_default_system_message() {
    let Some(m) = model() else { return };
    let prompt = m.chat_prompt("What is the capital of France?").unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    );
    let own_system = m
        .render_chat(&[ChatMessage::system("Be brief."), ChatMessage::user("Hi")], false)
        .unwrap();
    assert_eq!(own_system, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
}

#[test]
fn greedy_answer_to_the_capital_of_france() {
    let Some(m) = model() else { return };
    let prefix = m.prefill_text(&m.chat_prompt("What is the capital of France?").unwrap()).unwrap();
    let generation = m.generate(&prefix, 24).unwrap();
    assert_eq!(generation.text, "The capital of France is Paris.");
    assert_eq!(generation.stop_reason, candor_infer::StopReason::Eos);
    assert_eq!(generation.token_log_probs.len(), generation.token_ids.len());
    assert!(generation.token_log_probs.iter().all(|&lp| lp <= 0.0 && lp.is_finite()));
}
