//! The served backend's parsers on recorded answers of vLLM, SGLang and llama-server
//! (tests/fixtures, written from each engine's documented format; see its README): the label
//! log-probs come out of each shape at the right positions, ids are checked, and a server
//! without prompt log-probs is named as such.

use candor_served::{llama, sglang, vllm};
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

const PROMPT: [u32; 3] = [1, 450, 7483];

fn prompts() -> Vec<Vec<u32>> {
    vec![[PROMPT.as_slice(), &[10]].concat(), [PROMPT.as_slice(), &[20, 21]].concat()]
}

#[test]
fn vllm_prompt_logprobs_are_read_by_token_id_in_choice_order() {
    let all = vllm::parse_prompt_log_probs(&fixture("vllm_prompt_logprobs.json"), &prompts()).unwrap();
    // Choices come as index 1 then 0: each prompt gets its own.
    assert_eq!(all[0], vec![None, Some(-6.25), Some(-3.5), Some(-0.5)]);
    assert_eq!(all[1], vec![None, Some(-6.25), Some(-3.5), Some(-2.0), Some(-0.25)]);
}

#[test]
fn a_server_without_prompt_logprobs_is_named_as_such() {
    let err = vllm::parse_prompt_log_probs(&fixture("vllm_missing_prompt_logprobs.json"), &[PROMPT.to_vec()]).unwrap_err();
    assert_eq!(err, vllm::PromptLogProbsError::Missing(3));
    // A different prompt than the one answered: the counts disagree.
    let err = vllm::parse_prompt_log_probs(&fixture("vllm_prompt_logprobs.json"), &[PROMPT.to_vec()]).unwrap_err();
    assert!(matches!(err, vllm::PromptLogProbsError::Malformed(ref what) if what.contains("1 choices")), "{err:?}");
}

#[test]
fn sglang_input_logprobs_start_at_the_prompts_last_token() {
    let continuations = vec![vec![10], vec![20, 21]];
    let all = sglang::parse_continuation_log_probs(&fixture("sglang_generate_batch.json"), PROMPT.len(), &continuations).unwrap();
    assert_eq!(all, vec![vec![-0.5], vec![-2.0, -0.25]]);
    // Ids are checked: a continuation the answer is not about is refused.
    let err = sglang::parse_continuation_log_probs(&fixture("sglang_generate_batch.json"), PROMPT.len(), &[vec![11], vec![20, 21]]).unwrap_err();
    assert!(err.contains("11"), "{err}");
}

#[test]
fn sglang_generations_give_text_ids_and_the_stop() {
    let (text, ids, log_probs, stopped) = sglang::parse_generation(&fixture("sglang_generate.json")).unwrap();
    assert_eq!(text, r#"{"joy": 0.8, "sadness": 0.2}"#);
    assert_eq!(ids, vec![90, 1, 2]);
    assert_eq!(log_probs, vec![-0.01, -0.3, -0.05]);
    assert!(stopped);
}

#[test]
fn llama_server_forced_generations_give_the_targets_log_prob_or_name_the_other_token() {
    assert_eq!(llama::parse_forced(&fixture("llama_forced.json"), 10).unwrap(), -0.52);
    assert_eq!(llama::parse_forced(&fixture("llama_forced.json"), 11).unwrap_err(), llama::ForcedError::OtherToken(10));
    let old_format: Value = serde_json::json!({ "content": " joy", "completion_probabilities": [{ "content": " joy", "probs": [{ "tok_str": " joy", "prob": 0.6 }] }] });
    assert!(matches!(llama::parse_forced(&old_format, 10), Err(llama::ForcedError::Malformed(_))));
}

#[test]
fn llama_server_completions_give_text_ids_and_the_stop() {
    let (text, ids, log_probs, stopped) = llama::parse_completion(&fixture("llama_completion.json")).unwrap();
    assert_eq!((text.as_str(), ids, log_probs, stopped), (" happy.", vec![3516, 29889], vec![-1.25, -0.75], true));
}
