//! SGLang's native API (`sglang/srt/managers/io_struct.py` `GenerateReqInput`; the
//! tokenization routes of `srt/entrypoints/openai/serving_tokenize.py`, SGLang ≥ 0.5.4):
//! `/generate` with `input_ids` (used verbatim, no BOS added), `return_logprob` and
//! `logprob_start_len` for the exact log-probs of prompt tokens
//! (`meta_info.input_token_logprobs`: `[logprob, id, text]` tuples from `logprob_start_len`
//! on, the first always `null`, plain log-softmax of the logits), greedy generation, and
//! `sampling_params.json_schema` (a JSON-encoded string) for the constrained dict.
//! `/tokenize` takes the chat form (`messages`) from SGLang 0.5.23 on; `/detokenize` answers
//! `text` and skips special tokens unless told not to.

use serde_json::{json, Value};

use crate::error::{Result, ServedError};
use crate::http::HttpClient;
use crate::vllm::malformed;

/// The text of `ids`, special tokens written out.
pub async fn detokenize(client: &HttpClient, model: &str, ids: &[u32]) -> Result<String> {
    let answer = client.post("/detokenize", &json!({ "model": model, "tokens": ids, "skip_special_tokens": false })).await?;
    answer["text"].as_str().map(str::to_string).ok_or_else(|| malformed(client, "/detokenize", "a `text` string"))
}

/// Greedy sampling with nothing left to the server's defaults.
fn greedy(max_new_tokens: usize) -> Value {
    json!({ "max_new_tokens": max_new_tokens, "temperature": 0.0, "top_p": 1.0, "top_k": -1, "min_p": 0.0,
            "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0 })
}

/// The log-prob of every token of each continuation after `prompt`, in one batched request
/// that asks for input log-probs from the prompt's last token on.
pub async fn continuation_log_probs(client: &HttpClient, prompt: &[u32], continuations: &[Vec<u32>]) -> Result<Vec<Vec<f64>>> {
    let inputs: Vec<Vec<u32>> = continuations.iter().map(|ids| [prompt, ids.as_slice()].concat()).collect();
    let body = json!({
        "input_ids": inputs,
        "sampling_params": greedy(1),
        "return_logprob": true,
        "logprob_start_len": prompt.len().saturating_sub(1),
    });
    let answer = client.post("/generate", &body).await?;
    parse_continuation_log_probs(&answer, prompt.len(), continuations).map_err(|what| malformed(client, "/generate", &what))
}

/// The answers of a batched `/generate` (an array; one object when the batch had one input).
fn batch_items(answer: &Value) -> Vec<&Value> {
    match answer.as_array() {
        Some(items) => items.iter().collect(),
        None => vec![answer],
    }
}

/// The continuations' token log-probs from a batched `/generate` answer whose input log-probs
/// start at the prompt's last token (`prompt_len - 1`): entry 0 is `null`, entry `j` the
/// log-prob of continuation token `j - 1`, each tuple's id checked.
pub fn parse_continuation_log_probs(answer: &Value, prompt_len: usize, continuations: &[Vec<u32>]) -> std::result::Result<Vec<Vec<f64>>, String> {
    let items = batch_items(answer);
    if items.len() != continuations.len() {
        return Err(format!("{} answers (one per input), found {}", continuations.len(), items.len()));
    }
    let start = prompt_len.saturating_sub(1);
    items
        .iter()
        .zip(continuations)
        .map(|(item, ids)| {
            let tuples = item["meta_info"]["input_token_logprobs"]
                .as_array()
                .ok_or("`meta_info.input_token_logprobs` (return_logprob)")?;
            // Tuples cover positions start.. of the input: the prompt's last token, then the continuation.
            let offset = prompt_len - start;
            if tuples.len() != offset + ids.len() {
                return Err(format!("{} input log-probs from position {start}, found {}", offset + ids.len(), tuples.len()));
            }
            ids.iter()
                .enumerate()
                .map(|(j, &id)| {
                    let tuple = &tuples[offset + j];
                    match (tuple[0].as_f64(), tuple[1].as_u64()) {
                        (Some(log_prob), Some(got)) if got == u64::from(id) => Ok(log_prob),
                        _ => Err(format!("`[logprob, {id}, …]` for continuation token {j}, found {tuple}")),
                    }
                })
                .collect()
        })
        .collect()
}

/// A greedy generation: text, ids, their log-probs, whether an end token stopped it.
pub async fn complete(client: &HttpClient, prompt: &[u32], max_tokens: usize, schema: Option<&Value>) -> Result<(String, Vec<u32>, Vec<f64>, bool)> {
    let mut sampling = greedy(max_tokens);
    if let Some(schema) = schema {
        sampling["json_schema"] = json!(schema.to_string());
    }
    let body = json!({ "input_ids": prompt, "sampling_params": sampling, "return_logprob": true });
    let answer = client.post("/generate", &body).await?;
    let meta = &answer["meta_info"];
    client.log.record_usage(&json!({ "usage": { "prompt_tokens": meta["prompt_tokens"], "completion_tokens": meta["completion_tokens"] } }));
    parse_generation(&answer).map_err(|what| malformed(client, "/generate", &what))
}

/// Text, output ids and log-probs (`meta_info.output_token_logprobs`), and whether the
/// generation stopped on an end token (`finish_reason.type` `stop`), from a `/generate` answer.
pub fn parse_generation(answer: &Value) -> std::result::Result<(String, Vec<u32>, Vec<f64>, bool), String> {
    let text = answer["text"].as_str().ok_or("a `text` string")?.to_string();
    let tuples = answer["meta_info"]["output_token_logprobs"].as_array().ok_or("`meta_info.output_token_logprobs` (return_logprob)")?;
    let mut ids = Vec::with_capacity(tuples.len());
    let mut log_probs = Vec::with_capacity(tuples.len());
    for tuple in tuples {
        let id = tuple[1].as_u64().and_then(|id| u32::try_from(id).ok()).ok_or_else(|| format!("`[logprob, id, text]`, found {tuple}"))?;
        ids.push(id);
        log_probs.push(tuple[0].as_f64().unwrap_or(f64::NAN));
    }
    let stopped = answer["meta_info"]["finish_reason"]["type"].as_str() == Some("stop");
    Ok((text, ids, log_probs, stopped))
}

/// The ids of one user message through SGLang's chat template (`/tokenize` with `messages`).
pub async fn tokenize_chat(client: &HttpClient, model: &str, user_message: &str) -> Result<Vec<u32>> {
    crate::vllm::tokenize_chat(client, model, user_message).await.map_err(|error| match error {
        ServedError::Refused { status, message, .. } => ServedError::Inexact(format!(
            "{}/tokenize refused a chat (HTTP {status}: {message}); SGLang renders chats for /tokenize from 0.5.23 on — use --prompt-format raw or a newer server",
            client.base()
        )),
        other => other,
    })
}
