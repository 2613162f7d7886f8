//! Candor's tokenizers built from GGUF metadata against llama.cpp's own token ids for the same
//! files (the canonical tokenizer of the format), on the corpus of
//! `scripts/reference/llama_cpp_tokens.py`: SmolLM2 (byte-level BPE), Gemma 3 (SentencePiece,
//! 262k pieces, no space prefix) and Llama 2's SentencePiece vocabulary with the space prefix
//! (llama.cpp's vocab-only test file `ggml-vocab-llama-spm.gguf`, MIT, no weights: the case
//! where a label encoded on its own gets a second `▁`). Also the label continuations: the ids Candor gives a label
//! after a prompt equal the ids llama.cpp gives the prompt and label tokenized whole, past the
//! prompt's own ids.
//!
//! The files come from `scripts/test.sh` (`fetch-default-model.sh`, `fetch-model.sh
//! gemma3-270m`, `fetch-model.sh llama-spm-vocab`); a missing file fails the test with the
//! command that fetches it.

use std::path::PathBuf;

use candor_infer::Tokenizer;
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/llama_cpp_tokens.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(value: &Value) -> Vec<u32> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

fn tokenizer_of(file: &str, fetch: &str) -> Tokenizer {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models")).join(file);
    assert!(path.exists(), "{} is missing: run {fetch}", path.display());
    Tokenizer::from_gguf_file(&path).unwrap()
}

/// Every corpus text and every label continuation of `file` against llama.cpp's ids.
fn check_model(file: &str, fetch: &str) {
    let fixture = fixture();
    let model = fixture["models"].as_array().unwrap().iter().find(|m| m["file"] == file).unwrap();
    let tok = tokenizer_of(file, fetch);
    let mut mismatches = Vec::new();
    for case in model["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let (ours, theirs) = (tok.encode(text).unwrap(), ids(&case["ids"]));
        if ours != theirs {
            mismatches.push(format!("{text:?}: candor {ours:?}, llama.cpp {theirs:?}"));
        }
    }
    let prompt = fixture["prompt"].as_str().unwrap();
    let prompt_ids = tok.encode(prompt).unwrap();
    assert_eq!(prompt_ids, ids(&model["prompt_ids"]), "{file}: prompt ids");
    for continuation in model["continuations"].as_array().unwrap() {
        let label = continuation["label"].as_str().unwrap();
        let (ours, theirs) = (tok.encode_after(&prompt_ids, label).unwrap(), ids(&continuation["ids"]));
        if ours != theirs {
            mismatches.push(format!("continuation {label:?}: candor {ours:?}, llama.cpp {theirs:?}"));
        }
    }
    assert!(mismatches.is_empty(), "{file}: {} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
}

#[test]
fn smollm2_byte_level_bpe_matches_llama_cpp() {
    check_model("SmolLM2-135M-Instruct.Q4_1.gguf", "scripts/fetch-default-model.sh");
}

#[test]
fn gemma3_sentencepiece_matches_llama_cpp() {
    check_model("gemma-3-270m-q4_k_m.gguf", "scripts/fetch-model.sh gemma3-270m");
}

#[test]
fn llama2_sentencepiece_with_space_prefix_matches_llama_cpp() {
    check_model("ggml-vocab-llama-spm.gguf", "scripts/fetch-model.sh llama-spm-vocab");
}

#[test]
fn llama2_label_alone_gets_a_second_space_marker_that_the_label_in_context_does_not() {
    let tok = tokenizer_of("ggml-vocab-llama-spm.gguf", "scripts/fetch-model.sh llama-spm-vocab");
    let prompt = tok.encode_prompt("Answer:").unwrap();
    let in_context = tok.encode_after(&prompt, " joy").unwrap();
    let alone = tok.encode(" joy").unwrap();
    let pieces = |ids: &[u32]| ids.iter().map(|&id| tok.id_to_token(id).unwrap()).collect::<Vec<_>>();
    assert_eq!(pieces(&in_context), ["▁joy"]);
    assert_eq!(pieces(&alone), ["▁", "▁joy"]);
}

#[test]
fn gemma3_label_in_context_equals_label_alone_without_a_space_prefix() {
    // Gemma's SentencePiece has no space prefix: " joy" alone and after a prompt agree, so
    // encoding on its own would have been right here; the in-context ids must agree too.
    let tok = tokenizer_of("gemma-3-270m-q4_k_m.gguf", "scripts/fetch-model.sh gemma3-270m");
    let prompt = tok.encode("Answer:").unwrap();
    assert_eq!(tok.encode_after(&prompt, " joy").unwrap(), tok.encode(" joy").unwrap());
    assert!(!tok.is_byte_level());
}
