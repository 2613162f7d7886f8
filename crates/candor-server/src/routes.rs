//! The HTTP handlers of `candor serve`: each parses and checks its body ([`crate::api`]),
//! sends the model work to the engine thread ([`crate::engine`]) and writes vLLM's response
//! shape. Prompt log-probs are the model's exact ones ([`ModelBackend::prompt_log_probs`]);
//! generation is greedy; a `json_schema` response format runs Candor's constrained decoder.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use candor_backend::{ConstrainedOptions, ModelBackend, NumberScale, PromptLogProbs, StopReason};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::{
    single_user_message, ApiError, ChatRequest, CompletionLogprobs, CompletionRequest, DetokenizeRequest, Prompt,
    PromptLogprobEntry, PromptLogprobs, Sampling, TokenizeRequest,
};
use crate::engine::EngineHandle;
use crate::ServerLimits;

/// What every handler shares: the engine, the model's name and size, the limits.
pub struct Shared<B> {
    /// The engine thread's queue.
    pub engine: EngineHandle<B>,
    /// The name clients must send as `model`.
    pub model_name: String,
    /// What `/v1/models` says of the model.
    pub model_card: serde_json::Value,
    /// Context window in tokens.
    pub context_length: usize,
    /// Vocabulary size (token ids must be below it).
    pub vocab_size: usize,
    /// Request limits.
    pub limits: ServerLimits,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self.body())).into_response();
        if self.status == 503 {
            response.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}

/// The body as `T`, or a 400 naming what is wrong with it.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("request body: {e}")))
}

impl<B> Shared<B> {
    /// Refuses a `model` other than the served one.
    fn check_model(&self, name: Option<&str>) -> Result<(), ApiError> {
        match name {
            Some(name) if name != self.model_name => Err(ApiError::unknown_model(name, &self.model_name)),
            _ => Ok(()),
        }
    }

    /// Refuses ids outside the vocabulary and prompts that leave no room for `max_tokens`.
    fn check_tokens(&self, tokens: &[u32], max_tokens: usize) -> Result<(), ApiError> {
        if tokens.is_empty() {
            return Err(ApiError::invalid("a prompt has no tokens"));
        }
        if let Some(id) = tokens.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(ApiError::invalid(format!("token id {id} is outside the vocabulary of {}", self.vocab_size)));
        }
        if tokens.len() + max_tokens > self.context_length {
            return Err(ApiError::invalid(format!(
                "a prompt of {} tokens plus max_tokens {max_tokens} is more than the context window of {}",
                tokens.len(),
                self.context_length
            )));
        }
        Ok(())
    }
}

/// `GET /health`.
pub async fn health() -> StatusCode {
    StatusCode::OK
}

/// `GET /v1/models`.
pub async fn models<B>(State(shared): State<Arc<Shared<B>>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "object": "list", "data": [shared.model_card] }))
}

/// `POST /tokenize`: text, or one user message through the chat template.
pub async fn tokenize<B: ModelBackend + 'static>(State(shared): State<Arc<Shared<B>>>, body: Bytes) -> Result<Json<serde_json::Value>, ApiError> {
    let request: TokenizeRequest = parse(&body)?;
    shared.check_model(request.model.as_deref())?;
    let tokens = shared
        .engine
        .run(move |backend: &B| match (&request.prompt, &request.messages) {
            (Some(text), None) => match request.add_special_tokens.unwrap_or(true) {
                true => Ok(backend.encode_prompt(text)?),
                false => Ok(backend.encode(text)?),
            },
            (None, Some(messages)) => {
                if request.add_generation_prompt == Some(false) {
                    return Err(ApiError::invalid("`add_generation_prompt`: only true is supported"));
                }
                let text = backend.chat_prompt(single_user_message(messages)?)?;
                match request.add_special_tokens.unwrap_or(false) {
                    true => Ok(backend.encode_prompt(&text)?),
                    false => Ok(backend.encode(&text)?),
                }
            }
            _ => Err(ApiError::invalid("give exactly one of `prompt` and `messages`")),
        })
        .await?;
    Ok(Json(serde_json::json!({ "count": tokens.len(), "max_model_len": shared.context_length, "tokens": tokens })))
}

/// `POST /detokenize`.
pub async fn detokenize<B: ModelBackend + 'static>(State(shared): State<Arc<Shared<B>>>, body: Bytes) -> Result<Json<serde_json::Value>, ApiError> {
    let request: DetokenizeRequest = parse(&body)?;
    shared.check_model(request.model.as_deref())?;
    if let Some(id) = request.tokens.iter().find(|&&id| id as usize >= shared.vocab_size) {
        return Err(ApiError::invalid(format!("token id {id} is outside the vocabulary of {}", shared.vocab_size)));
    }
    let text = shared.engine.run(move |backend: &B| Ok(backend.decode(&request.tokens)?)).await?;
    Ok(Json(serde_json::json!({ "prompt": text })))
}

/// What one prompt of a completion produced.
struct CompletionOutcome {
    prompt: Vec<u32>,
    generated: Vec<u32>,
    /// The generated text (a constrained dict's whole text).
    text: String,
    finish_reason: &'static str,
    /// Log-probs of prompt + generated tokens, when asked for.
    log_probs: Option<PromptLogProbs>,
}

/// The constrained-decoding labels and options of `sampling`, if it asks for a dict.
fn constrained_request(sampling: &Sampling) -> Result<Option<(Vec<String>, ConstrainedOptions)>, ApiError> {
    sampling.check()?;
    let Some(format) = &sampling.response_format else { return Ok(None) };
    let Some(labels) = format.labels()? else { return Ok(None) };
    let max_fraction_digits = sampling.max_fraction_digits.unwrap_or(3);
    if !(1..=8).contains(&max_fraction_digits) {
        return Err(ApiError::invalid("`max_fraction_digits` must be between 1 and 8"));
    }
    Ok(Some((labels, ConstrainedOptions { max_fraction_digits, scale: NumberScale::Fraction })))
}

/// `POST /v1/completions`.
pub async fn completions<B: ModelBackend + 'static>(State(shared): State<Arc<Shared<B>>>, body: Bytes) -> Result<Json<serde_json::Value>, ApiError> {
    let request: CompletionRequest = parse(&body)?;
    shared.check_model(Some(&request.model))?;
    let constrained = constrained_request(&request.sampling)?;
    let top = request.prompt_logprobs.max(request.logprobs).unwrap_or(0);
    if top > shared.limits.max_logprobs {
        return Err(ApiError::invalid(format!("at most {} log-probs per token", shared.limits.max_logprobs)));
    }
    if constrained.is_some() && (request.logprobs.is_some() || request.prompt_logprobs.is_some()) {
        return Err(ApiError::invalid("log-probs together with `response_format` are not supported"));
    }
    let max_tokens = request.max_tokens.unwrap_or(16);
    let prompts = request.prompt.clone().prompts(shared.limits.max_prompts)?;
    let token_lists = tokenize_prompts(&shared, prompts, max_tokens).await?;
    let outcomes = match &constrained {
        Some((labels, options)) => constrained_outcomes(&shared, token_lists, labels, options).await?,
        None => {
            let wants_log_probs = request.prompt_logprobs.is_some() || request.logprobs.is_some();
            let chunks = request.candor_prefix_chunks.clone();
            shared
                .engine
                .run(move |backend: &B| free_outcomes(backend, token_lists, max_tokens, wants_log_probs.then_some(top), &chunks))
                .await?
        }
    };
    let decoded = decode_outcome_tokens(&shared, &outcomes).await?;
    let choices: Vec<serde_json::Value> = outcomes
        .iter()
        .enumerate()
        .map(|(index, outcome)| completion_choice(index, outcome, &request, &decoded))
        .collect();
    let prompt_tokens: usize = outcomes.iter().map(|o| o.prompt.len()).sum();
    let completion_tokens: usize = outcomes.iter().map(|o| o.generated.len()).sum();
    Ok(Json(serde_json::json!({
        "id": format!("cmpl-{}", unix_seconds()),
        "object": "text_completion",
        "created": unix_seconds(),
        "model": shared.model_name,
        "choices": choices,
        "usage": { "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens },
    })))
}

/// Seconds since the Unix epoch.
fn unix_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Token ids of each prompt (texts with the model's BOS when it wants one), checked.
async fn tokenize_prompts<B: ModelBackend + 'static>(shared: &Shared<B>, prompts: Vec<Prompt>, max_tokens: usize) -> Result<Vec<Vec<u32>>, ApiError> {
    let lists = shared
        .engine
        .run(move |backend: &B| {
            prompts
                .into_iter()
                .map(|prompt| match prompt {
                    Prompt::Ids(ids) => Ok(ids),
                    Prompt::Text(text) => Ok(backend.encode_prompt(&text)?),
                })
                .collect::<Result<Vec<_>, ApiError>>()
        })
        .await?;
    for tokens in &lists {
        shared.check_tokens(tokens, max_tokens)?;
    }
    Ok(lists)
}

/// Constrained dicts after each prompt, queued together so the engine batches them.
async fn constrained_outcomes<B: ModelBackend + 'static>(
    shared: &Shared<B>,
    token_lists: Vec<Vec<u32>>,
    labels: &[String],
    options: &ConstrainedOptions,
) -> Result<Vec<CompletionOutcome>, ApiError> {
    let dicts = futures_join(token_lists.iter().map(|tokens| shared.engine.constrained(tokens.clone(), labels.to_vec(), *options))).await;
    token_lists
        .into_iter()
        .zip(dicts)
        .map(|(prompt, dict)| {
            let dict = dict?;
            Ok(CompletionOutcome {
                prompt,
                generated: dict.numbers.iter().flat_map(|n| n.token_ids.iter().copied()).collect(),
                text: dict.text,
                finish_reason: "stop",
                log_probs: None,
            })
        })
        .collect()
}

/// Awaits every future, in order (they are all queued before the first is awaited).
async fn futures_join<T>(futures: impl Iterator<Item = impl std::future::Future<Output = T>>) -> Vec<T> {
    let pending: Vec<_> = futures.map(Box::pin).collect();
    let mut out = Vec::with_capacity(pending.len());
    for future in pending {
        out.push(future.await);
    }
    out
}

/// Greedy completions of each prompt, with log-probs of prompt and generated tokens (`top`
/// alternatives) when asked. With one token to generate and log-probs computed, the greedy
/// token is read from them instead of a second forward pass.
fn free_outcomes<B: ModelBackend>(
    backend: &B,
    prompts: Vec<Vec<u32>>,
    max_tokens: usize,
    top: Option<usize>,
    prefix_chunks: &[usize],
) -> Result<Vec<CompletionOutcome>, ApiError> {
    let stops = backend.stop_tokens();
    let prompt_log_probs = match top {
        Some(top) => Some(backend.prompt_log_probs(&prompts, top.max(1), prefix_chunks)?),
        None => None,
    };
    let generations: Vec<(Vec<u32>, &'static str)> = match (&prompt_log_probs, max_tokens) {
        (_, 0) => prompts.iter().map(|_| (Vec::new(), "length")).collect(),
        (Some(all), 1) => all
            .iter()
            .map(|lp| match lp.next.first() {
                Some(&(id, _)) if !stops.contains(&id) => (vec![id], "length"),
                _ => (Vec::new(), "stop"),
            })
            .collect(),
        _ => {
            let prefixes: Vec<B::Prefix> = prompts.iter().map(|p| backend.prefill(p)).collect::<Result<_, _>>()?;
            let refs: Vec<&B::Prefix> = prefixes.iter().collect();
            backend
                .generate_batch(&refs, max_tokens)?
                .into_iter()
                .map(|g| (g.token_ids, if g.stop_reason == StopReason::Eos { "stop" } else { "length" }))
                .collect()
        }
    };
    let mut outcomes = Vec::with_capacity(prompts.len());
    for (i, (prompt, (generated, finish_reason))) in prompts.into_iter().zip(generations).enumerate() {
        let log_probs = match (top, &prompt_log_probs) {
            (Some(top), Some(all)) => Some(with_generated(backend, &all[i], &prompt, &generated, top)?),
            _ => None,
        };
        outcomes.push(CompletionOutcome { text: backend.decode(&generated)?, prompt, generated, finish_reason, log_probs });
    }
    Ok(outcomes)
}

/// `prompt_lp` (of `prompt`) extended over the `generated` tokens: from its `next` for one
/// token, by scoring prompt + generated otherwise.
fn with_generated<B: ModelBackend>(backend: &B, prompt_lp: &PromptLogProbs, prompt: &[u32], generated: &[u32], top: usize) -> Result<PromptLogProbs, ApiError> {
    match generated {
        [] => Ok(prompt_lp.clone()),
        [only] => {
            let mut all = prompt_lp.clone();
            let log_prob = prompt_lp.next.iter().find(|(id, _)| id == only).map(|&(_, lp)| lp);
            let rank = 1 + prompt_lp.next.iter().position(|(id, _)| id == only).unwrap_or(prompt_lp.next.len());
            all.tokens.push(candor_backend::TokenLogProb { token_id: *only, log_prob, rank, top: prompt_lp.next.iter().take(top.max(1)).copied().collect() });
            Ok(all)
        }
        _ => Ok(backend.prompt_log_probs(&[[prompt, generated].concat()], top.max(1), &[])?.remove(0)),
    }
}

/// The text of every token that appears in the outcomes' log-probs (ids and alternatives).
async fn decode_outcome_tokens<B: ModelBackend + 'static>(shared: &Shared<B>, outcomes: &[CompletionOutcome]) -> Result<BTreeMap<u32, String>, ApiError> {
    let mut ids: Vec<u32> = outcomes
        .iter()
        .flat_map(|o| {
            let tokens = o.prompt.iter().chain(&o.generated).copied();
            let alternatives = o.log_probs.iter().flat_map(|lp| lp.tokens.iter().flat_map(|t| t.top.iter().map(|&(id, _)| id)));
            tokens.chain(alternatives).collect::<Vec<_>>()
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    shared
        .engine
        .run(move |backend: &B| ids.into_iter().map(|id| Ok((id, backend.decode(&[id])?))).collect())
        .await
}

/// One choice of a completion response.
fn completion_choice(index: usize, outcome: &CompletionOutcome, request: &CompletionRequest, decoded: &BTreeMap<u32, String>) -> serde_json::Value {
    let prompt_text: String = outcome.prompt.iter().map(|id| decoded[id].as_str()).collect();
    let text = match request.echo {
        true => format!("{prompt_text}{}", outcome.text),
        false => outcome.text.clone(),
    };
    let mut choice = serde_json::json!({ "index": index, "text": text, "logprobs": null, "finish_reason": outcome.finish_reason, "stop_reason": null });
    if let (Some(k), Some(lp)) = (request.prompt_logprobs, &outcome.log_probs) {
        choice["prompt_logprobs"] = serde_json::json!(prompt_logprobs(&lp.tokens[..outcome.prompt.len()], k, decoded));
    }
    if let (Some(k), Some(lp)) = (request.logprobs, &outcome.log_probs) {
        let first = if request.echo { 0 } else { outcome.prompt.len() };
        choice["logprobs"] = serde_json::json!(legacy_logprobs(&lp.tokens[first..], k, decoded, request.return_tokens_as_token_ids));
    }
    choice
}

/// vLLM's `prompt_logprobs`: `null`, then per token its own entry and the `k` most likely.
fn prompt_logprobs(tokens: &[candor_backend::TokenLogProb], k: usize, decoded: &BTreeMap<u32, String>) -> PromptLogprobs {
    tokens
        .iter()
        .map(|token| {
            let log_prob = token.log_prob?;
            let mut entries = BTreeMap::new();
            for (rank, &(id, lp)) in token.top.iter().take(k).enumerate() {
                entries.insert(id.to_string(), PromptLogprobEntry { logprob: lp, rank: rank + 1, decoded_token: decoded[&id].clone() });
            }
            entries.insert(
                token.token_id.to_string(),
                PromptLogprobEntry { logprob: log_prob, rank: token.rank, decoded_token: decoded[&token.token_id].clone() },
            );
            Some(entries)
        })
        .collect()
}

/// OpenAI's legacy `logprobs` over `tokens`.
fn legacy_logprobs(tokens: &[candor_backend::TokenLogProb], k: usize, decoded: &BTreeMap<u32, String>, as_ids: bool) -> CompletionLogprobs {
    let name = |id: u32| match as_ids {
        true => format!("token_id:{id}"),
        false => decoded[&id].clone(),
    };
    let mut out = CompletionLogprobs::default();
    let mut offset = 0;
    for token in tokens {
        out.tokens.push(name(token.token_id));
        out.token_logprobs.push(token.log_prob);
        out.top_logprobs.push(token.log_prob.map(|_| token.top.iter().take(k.max(1)).map(|&(id, lp)| (name(id), lp)).collect()));
        out.text_offset.push(offset);
        offset += decoded[&token.token_id].len();
    }
    out
}

/// `POST /v1/chat/completions`: one user message, greedy, optionally a constrained dict.
pub async fn chat_completions<B: ModelBackend + 'static>(State(shared): State<Arc<Shared<B>>>, body: Bytes) -> Result<Json<serde_json::Value>, ApiError> {
    let request: ChatRequest = parse(&body)?;
    shared.check_model(Some(&request.model))?;
    let constrained = constrained_request(&request.sampling)?;
    if constrained.is_some() && request.logprobs {
        return Err(ApiError::invalid("`logprobs` together with `response_format` are not supported"));
    }
    let max_tokens = request.max_completion_tokens.or(request.max_tokens).unwrap_or(shared.limits.default_chat_max_tokens);
    let user = single_user_message(&request.messages)?.to_string();
    let tokens = shared.engine.run(move |backend: &B| Ok(backend.encode_prompt(&backend.chat_prompt(&user)?)?)).await?;
    shared.check_tokens(&tokens, max_tokens)?;
    let top = request.logprobs.then(|| request.top_logprobs.unwrap_or(0));
    if top.is_some_and(|k| k > shared.limits.max_logprobs) {
        return Err(ApiError::invalid(format!("at most {} log-probs per token", shared.limits.max_logprobs)));
    }
    let outcome = match &constrained {
        Some((labels, options)) => constrained_outcomes(&shared, vec![tokens], labels, options).await?.remove(0),
        None => shared.engine.run(move |backend: &B| Ok(free_outcomes(backend, vec![tokens], max_tokens, top, &[])?.remove(0))).await?,
    };
    let decoded = decode_outcome_tokens(&shared, std::slice::from_ref(&outcome)).await?;
    let logprobs = outcome.log_probs.as_ref().map(|lp| {
        let content: Vec<serde_json::Value> = lp.tokens[outcome.prompt.len()..]
            .iter()
            .map(|t| {
                let alternatives: Vec<serde_json::Value> =
                    t.top.iter().take(top.unwrap_or(0)).map(|&(id, lp)| serde_json::json!({ "token": decoded[&id], "logprob": lp })).collect();
                serde_json::json!({ "token": decoded[&t.token_id], "logprob": t.log_prob, "top_logprobs": alternatives })
            })
            .collect();
        serde_json::json!({ "content": content })
    });
    Ok(Json(serde_json::json!({
        "id": format!("chatcmpl-{}", unix_seconds()),
        "object": "chat.completion",
        "created": unix_seconds(),
        "model": shared.model_name,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": outcome.text },
            "logprobs": logprobs,
            "finish_reason": outcome.finish_reason,
        }],
        "usage": { "prompt_tokens": outcome.prompt.len(), "completion_tokens": outcome.generated.len(), "total_tokens": outcome.prompt.len() + outcome.generated.len() },
    })))
}
