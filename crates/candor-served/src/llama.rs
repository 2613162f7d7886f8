//! llama.cpp's `llama-server` API (`tools/server/README.md`; request fields in
//! `server-schema.cpp`, responses in `server-task.cpp`). It has no prompt log-probs, so a label
//! token's log-prob is read off a forced one-token generation: the prompt is the context and
//! the label's earlier tokens, `n_predict: 1`, `n_probs: 1`, greedy, and a `logit_bias` that
//! makes the target token the one sampled; `completion_probabilities[0].logprob` is then the
//! target's log-prob from the raw logits (taken before any bias or sampler), and the returned
//! id is checked to be the target. `cache_prompt: false` on every request: with the prompt
//! cache on, one context was seen to give −1.571, −1.537 or −1.451 for the same token. The
//! numbers are llama.cpp's own (its products quantize activations to 8 bits), so runs mark
//! them approximate.

use serde_json::{json, Value};

use crate::error::{Result, ServedError};
use crate::http::HttpClient;
use crate::vllm::malformed;

/// What `/props` tells of the served model.
#[derive(Debug, Clone, PartialEq)]
pub struct Props {
    /// The server's context window (`n_ctx`), which bounds every prompt.
    pub context_length: usize,
    /// The GGUF file the server loaded.
    pub model_path: String,
    /// The server's build.
    pub build_info: String,
    /// Whether the model has a chat template.
    pub has_chat_template: bool,
}

/// `GET /props`.
pub async fn props(client: &HttpClient) -> Result<Props> {
    let answer = client.get("/props").await?;
    let context_length = answer["default_generation_settings"]["n_ctx"]
        .as_u64()
        .or_else(|| answer["n_ctx"].as_u64())
        .ok_or_else(|| malformed(client, "/props", "`default_generation_settings.n_ctx` (the context window)"))?;
    Ok(Props {
        context_length: context_length as usize,
        model_path: answer["model_path"].as_str().unwrap_or_default().to_string(),
        build_info: answer["build_info"].as_str().unwrap_or_default().to_string(),
        has_chat_template: answer["chat_template"].as_str().is_some_and(|t| !t.is_empty()),
    })
}

/// `text`'s ids (`add_special`: BOS when the model wants one; special tokens in the text are
/// matched as such).
pub async fn tokenize(client: &HttpClient, text: &str, add_special: bool) -> Result<Vec<u32>> {
    let answer = client.post("/tokenize", &json!({ "content": text, "add_special": add_special, "parse_special": true })).await?;
    answer["tokens"]
        .as_array()
        .and_then(|ids| ids.iter().map(|id| id.as_u64().and_then(|id| u32::try_from(id).ok())).collect())
        .ok_or_else(|| malformed(client, "/tokenize", "a `tokens` array of ids"))
}

/// The text of `ids`.
pub async fn detokenize(client: &HttpClient, ids: &[u32]) -> Result<String> {
    let answer = client.post("/detokenize", &json!({ "tokens": ids })).await?;
    answer["content"].as_str().map(str::to_string).ok_or_else(|| malformed(client, "/detokenize", "a `content` string"))
}

/// One user message rendered by the model's chat template with the generation prompt.
pub async fn apply_template(client: &HttpClient, user_message: &str) -> Result<String> {
    let answer = client
        .post("/apply-template", &json!({ "messages": [{ "role": "user", "content": user_message }], "add_generation_prompt": true }))
        .await?;
    answer["prompt"].as_str().map(str::to_string).ok_or_else(|| malformed(client, "/apply-template", "a `prompt` string"))
}

/// The request fields that make sampling greedy and leave nothing to the server's defaults.
fn greedy(prompt: &[u32], n_predict: usize) -> Value {
    json!({
        "prompt": prompt,
        "n_predict": n_predict,
        "temperature": 0.0,
        "top_k": 1,
        "top_p": 1.0,
        "min_p": 0.0,
        "repeat_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "cache_prompt": false,
        "return_tokens": true,
        "stream": false,
    })
}

/// log p(`target` | `context`), from a generation forced to `target`.
pub async fn forced_log_prob(client: &HttpClient, context: &[u32], target: u32) -> Result<f64> {
    let mut body = greedy(context, 1);
    body["n_probs"] = json!(1);
    body["logit_bias"] = json!([[target, 1.0e4]]);
    let answer = client.post("/completion", &body).await?;
    client.log.record_usage(&usage(&answer));
    parse_forced(&answer, target).map_err(|error| match error {
        ForcedError::OtherToken(id) => ServedError::Inexact(format!(
            "{}/completion: forcing token {target} with logit_bias produced token {id}; the server did not honour the bias",
            client.base()
        )),
        ForcedError::Malformed(what) => malformed(client, "/completion", &what),
    })
}

/// Why a forced generation's answer gave no log-prob.
#[derive(Debug, Clone, PartialEq)]
pub enum ForcedError {
    /// Another token than the forced one came out.
    OtherToken(u64),
    /// The answer does not have the documented shape.
    Malformed(String),
}

/// The forced `target`'s log-prob from a `/completion` answer with `n_probs` (the current
/// `completion_probabilities` shape: `[{id, token, bytes, logprob, top_logprobs}]`).
pub fn parse_forced(answer: &Value, target: u32) -> std::result::Result<f64, ForcedError> {
    let first = &answer["completion_probabilities"][0];
    match (first["id"].as_u64(), first["logprob"].as_f64()) {
        (Some(id), Some(log_prob)) if id == u64::from(target) => Ok(log_prob),
        (Some(id), Some(_)) => Err(ForcedError::OtherToken(id)),
        _ => Err(ForcedError::Malformed(
            "`completion_probabilities[0].id` and `.logprob` (n_probs; llama.cpp builds before December 2024 answer `probs` instead)".into(),
        )),
    }
}

/// A greedy completion: the text, the generated ids, their log-probs, and whether an end
/// token stopped it.
pub async fn complete(client: &HttpClient, prompt: &[u32], max_tokens: usize, schema: Option<&Value>) -> Result<(String, Vec<u32>, Vec<f64>, bool)> {
    let mut body = greedy(prompt, max_tokens);
    body["n_probs"] = json!(1);
    if let Some(schema) = schema {
        body["json_schema"] = schema.clone();
    }
    let answer = client.post("/completion", &body).await?;
    client.log.record_usage(&usage(&answer));
    parse_completion(&answer).map_err(|what| malformed(client, "/completion", &what))
}

/// Text, generated ids (`return_tokens`), their log-probs and whether an end token stopped
/// the generation (`stop_type` `eos`) from a `/completion` answer.
pub fn parse_completion(answer: &Value) -> std::result::Result<(String, Vec<u32>, Vec<f64>, bool), String> {
    let text = answer["content"].as_str().ok_or("a `content` string")?.to_string();
    let ids: Vec<u32> = answer["tokens"]
        .as_array()
        .and_then(|ids| ids.iter().map(|id| id.as_u64().and_then(|id| u32::try_from(id).ok())).collect())
        .ok_or("a `tokens` array (return_tokens)")?;
    let log_probs = answer["completion_probabilities"]
        .as_array()
        .map(|entries| entries.iter().map(|e| e["logprob"].as_f64().unwrap_or(f64::NAN)).collect())
        .unwrap_or_default();
    Ok((text, ids, log_probs, answer["stop_type"].as_str() == Some("eos")))
}

/// llama-server's token counts in the `usage` shape the request log reads.
fn usage(answer: &Value) -> Value {
    json!({ "usage": { "prompt_tokens": answer["tokens_evaluated"], "completion_tokens": answer["tokens_predicted"] } })
}
