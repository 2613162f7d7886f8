//! vLLM's OpenAI-compatible API, as `candor serve` also speaks it: `/v1/models`, `/tokenize`
//! (text, or a chat rendered by the server's template), `/detokenize`, and `/v1/completions`
//! with token-id prompts — `prompt_logprobs: 0` for the exact log-prob of every prompt token
//! (raw log-softmax, never through the sampler; the prompt's own token is always in the
//! entry), greedy generation with every sampling parameter sent explicitly (so the server's
//! generation config cannot change it), and `response_format` `json_schema` for the
//! constrained dict. Response shapes: vLLM 0.8–0.12 (`vllm/entrypoints/openai/protocol.py`,
//! `serving_completion.py`, `serving_tokenization.py`).

use serde_json::{json, Value};

use crate::error::{Result, ServedError};
use crate::http::HttpClient;

/// A model a server lists in `/v1/models`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCard {
    /// The name requests carry.
    pub id: String,
    /// Who serves it (`vllm`, `sglang`, `llamacpp`, `candor`), when the server says.
    pub owned_by: String,
    /// Where the weights came from (vLLM: the model path or repo), when the server says.
    pub root: Option<String>,
    /// Context window, when the server says.
    pub max_model_len: Option<usize>,
    /// sha256 of the weights (`candor serve` reports it).
    pub weights_sha256: Option<String>,
}

/// The models of `GET /v1/models`.
pub async fn models(client: &HttpClient) -> Result<Vec<ModelCard>> {
    let answer = client.get("/v1/models").await?;
    let data = answer["data"].as_array().ok_or_else(|| malformed(client, "/v1/models", "a `data` array"))?;
    data.iter()
        .map(|card| {
            let id = card["id"].as_str().ok_or_else(|| malformed(client, "/v1/models", "an `id` string per model"))?;
            Ok(ModelCard {
                id: id.to_string(),
                owned_by: card["owned_by"].as_str().unwrap_or_default().to_string(),
                root: card["root"].as_str().map(str::to_string),
                max_model_len: card["max_model_len"].as_u64().map(|n| n as usize),
                weights_sha256: card["weights_sha256"].as_str().filter(|s| !s.is_empty()).map(str::to_string),
            })
        })
        .collect()
}

/// A `what` was expected from `path` and did not come.
pub(crate) fn malformed(client: &HttpClient, path: &str, what: &str) -> ServedError {
    ServedError::Malformed { url: format!("{}{path}", client.base()), what: format!("expected {what}") }
}

/// Token ids of a JSON array, or what was expected.
fn token_ids(client: &HttpClient, path: &str, value: &Value) -> Result<Vec<u32>> {
    value
        .as_array()
        .and_then(|ids| ids.iter().map(|id| id.as_u64().and_then(|id| u32::try_from(id).ok())).collect::<Option<Vec<u32>>>())
        .ok_or_else(|| malformed(client, path, "an array of token ids"))
}

/// `text`'s token ids (`add_special_tokens`: the model's BOS when it wants one).
pub async fn tokenize(client: &HttpClient, model: &str, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
    let body = json!({ "model": model, "prompt": text, "add_special_tokens": add_special_tokens });
    token_ids(client, "/tokenize", &client.post("/tokenize", &body).await?["tokens"])
}

/// The ids of one user message rendered by the server's chat template, with the generation
/// prompt (the template writes any BOS itself).
pub async fn tokenize_chat(client: &HttpClient, model: &str, user_message: &str) -> Result<Vec<u32>> {
    let body = json!({
        "model": model,
        "messages": [{ "role": "user", "content": user_message }],
        "add_generation_prompt": true,
        "add_special_tokens": false,
    });
    token_ids(client, "/tokenize", &client.post("/tokenize", &body).await?["tokens"])
}

/// The text of `ids`.
pub async fn detokenize(client: &HttpClient, model: &str, ids: &[u32]) -> Result<String> {
    let answer = client.post("/detokenize", &json!({ "model": model, "tokens": ids })).await?;
    answer["prompt"].as_str().map(str::to_string).ok_or_else(|| malformed(client, "/detokenize", "a `prompt` string"))
}

/// The fields every completion request sends, so the server's generation config cannot
/// change greedy decoding.
fn greedy(model: &str, max_tokens: usize) -> Value {
    json!({
        "model": model,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "top_p": 1.0,
        "top_k": -1,
        "min_p": 0.0,
        "n": 1,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "repetition_penalty": 1.0,
        "stream": false,
    })
}

/// The choices of a completion response, ordered by `index`, one per prompt.
fn choices(client: &HttpClient, answer: &Value, prompts: usize) -> Result<Vec<Value>> {
    let mut choices = answer["choices"].as_array().cloned().ok_or_else(|| malformed(client, "/v1/completions", "a `choices` array"))?;
    choices.sort_by_key(|choice| choice["index"].as_u64().unwrap_or(u64::MAX));
    match choices.len() == prompts {
        true => Ok(choices),
        false => Err(malformed(client, "/v1/completions", &format!("{prompts} choices (one per prompt), found {}", choices.len()))),
    }
}

/// `log p(prompt[j] | prompt[..j])` for every token of every prompt (`None` for the first),
/// in one request. `prefix_chunks` (sent only when not empty; `candor serve` reads it, other
/// servers ignore it): how the shared prefix was processed locally.
pub async fn prompt_log_probs(client: &HttpClient, model: &str, prompts: &[Vec<u32>], prefix_chunks: &[usize]) -> Result<Vec<Vec<Option<f64>>>> {
    let mut body = greedy(model, 1);
    body["prompt"] = json!(prompts);
    body["prompt_logprobs"] = json!(0);
    if !prefix_chunks.is_empty() {
        body["candor_prefix_chunks"] = json!(prefix_chunks);
    }
    let answer = client.post("/v1/completions", &body).await?;
    client.log.record_usage(&answer);
    parse_prompt_log_probs(&answer, prompts).map_err(|what| match what {
        PromptLogProbsError::Missing(n) => ServedError::Inexact(format!(
            "{}/v1/completions gave no `prompt_logprobs` of a prompt's {n} tokens: the server cannot give the exact log-probs of label tokens (vLLM and candor serve can; Ollama and TGI cannot)",
            client.base()
        )),
        PromptLogProbsError::Malformed(what) => malformed(client, "/v1/completions", &what),
    })
}

/// Why a completion response's prompt log-probs could not be read.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptLogProbsError {
    /// A choice has no `prompt_logprobs` of its prompt's length (given): the server has none.
    Missing(usize),
    /// The response does not have the documented shape: what was expected.
    Malformed(String),
}

/// `log p(prompt[j] | prompt[..j])` of every token of every prompt (`None` for the first) from a
/// `/v1/completions` response to `prompt_logprobs` (choices in `index` order, one per prompt;
/// each entry keyed by token id, holding the prompt's own token).
pub fn parse_prompt_log_probs(answer: &Value, prompts: &[Vec<u32>]) -> std::result::Result<Vec<Vec<Option<f64>>>, PromptLogProbsError> {
    let mut choices = answer["choices"].as_array().cloned().ok_or_else(|| PromptLogProbsError::Malformed("a `choices` array".into()))?;
    choices.sort_by_key(|choice| choice["index"].as_u64().unwrap_or(u64::MAX));
    if choices.len() != prompts.len() {
        return Err(PromptLogProbsError::Malformed(format!("{} choices (one per prompt), found {}", prompts.len(), choices.len())));
    }
    prompts
        .iter()
        .zip(&choices)
        .map(|(prompt, choice)| {
            let entries = choice["prompt_logprobs"]
                .as_array()
                .filter(|entries| entries.len() == prompt.len())
                .ok_or(PromptLogProbsError::Missing(prompt.len()))?;
            prompt
                .iter()
                .zip(entries)
                .enumerate()
                .map(|(j, (id, entry))| match j {
                    0 => Ok(None),
                    _ => entry[id.to_string()]["logprob"]
                        .as_f64()
                        .map(Some)
                        .ok_or_else(|| PromptLogProbsError::Malformed(format!("the log-prob of prompt token {id} at position {j}"))),
                })
                .collect()
        })
        .collect()
}

/// A greedy completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The generated text.
    pub text: String,
    /// The generated ids (from `logprobs` with `return_tokens_as_token_ids`).
    pub token_ids: Vec<u32>,
    /// Their log-probs.
    pub token_log_probs: Vec<f64>,
    /// `stop` (an end token) or `length`.
    pub finish_reason: String,
}

/// Greedy generation of at most `max_tokens` after `prompt`; `response_format` constrains it.
pub async fn complete(client: &HttpClient, model: &str, prompt: &[u32], max_tokens: usize, constraint: Option<(&Value, usize)>) -> Result<Completion> {
    let mut body = greedy(model, max_tokens);
    body["prompt"] = json!(prompt);
    body["logprobs"] = json!(0);
    body["return_tokens_as_token_ids"] = json!(true);
    if let Some((schema, max_fraction_digits)) = constraint {
        body["response_format"] = json!({ "type": "json_schema", "json_schema": { "name": "verbalized_distribution", "schema": schema } });
        body["max_fraction_digits"] = json!(max_fraction_digits);
        // The dict's text alone is wanted; log-probs of a constrained answer are refused by
        // candor serve and mean little under a grammar.
        body.as_object_mut().map(|b| b.remove("logprobs"));
    }
    let answer = client.post("/v1/completions", &body).await?;
    client.log.record_usage(&answer);
    let choice = choices(client, &answer, 1)?.remove(0);
    let text = choice["text"].as_str().ok_or_else(|| malformed(client, "/v1/completions", "a `text` string"))?.to_string();
    let (token_ids, token_log_probs) = match constraint {
        Some(_) => (Vec::new(), Vec::new()),
        None => generated_tokens(client, &choice["logprobs"])?,
    };
    Ok(Completion { text, token_ids, token_log_probs, finish_reason: choice["finish_reason"].as_str().unwrap_or("length").to_string() })
}

/// The ids and log-probs of `logprobs.tokens` written as `token_id:<id>`.
fn generated_tokens(client: &HttpClient, logprobs: &Value) -> Result<(Vec<u32>, Vec<f64>)> {
    let expected = "`logprobs.tokens` as `token_id:<id>` (return_tokens_as_token_ids)";
    let tokens = logprobs["tokens"].as_array().ok_or_else(|| malformed(client, "/v1/completions", expected))?;
    let ids = tokens
        .iter()
        .map(|t| t.as_str().and_then(|t| t.strip_prefix("token_id:")).and_then(|id| id.parse().ok()))
        .collect::<Option<Vec<u32>>>()
        .ok_or_else(|| malformed(client, "/v1/completions", expected))?;
    let log_probs = logprobs["token_logprobs"]
        .as_array()
        .map(|lps| lps.iter().map(|lp| lp.as_f64().unwrap_or(f64::NAN)).collect())
        .unwrap_or_default();
    Ok((ids, log_probs))
}
