//! The served backend of Candor: a model behind an inference server's HTTP API as a
//! [`ModelBackend`], so `candor run --model http://HOST:PORT/v1` runs the same experiment as
//! a local model — same prompts, same records, same calibration, resumable.
//!
//! What it needs from the server, exactly: the token ids of the prompt as the server's model
//! sees them (its `/tokenize`, chat rendered by its own template and checked to survive
//! `/detokenize` → `/tokenize` unchanged), and the log-probability of each label token in
//! context: vLLM's `prompt_logprobs` and SGLang's input log-probs (raw, never sampled;
//! [`vllm`], [`sglang`]), or on llama.cpp's llama-server, which has none, one forced one-token
//! generation per label token ([`llama`]; llama.cpp's own numbers, marked approximate).
//! `candor serve` speaks vLLM's API and is told how each prompt was chunked, so its numbers
//! equal a local run's bit for bit. Labels are tokenized as they follow the prompt's text,
//! like the local backend does. Verbalized answers are greedy, free or
//! under a JSON schema (one number per label, in order, all required, no others); an answer
//! that breaks the schema (a server that dropped the constraint) is counted in the request
//! log and recorded as the text it is.
//!
//! At start, [`ServedBackend::connect`] finds the model (`/v1/models`), asks which engine
//! serves it, and runs a self-test: one token's log-prob from the prompt path and from a
//! greedy one-token generation must agree to 1e-3.
//!
//! Requests run on an internal async runtime, `concurrency` at a time (examples of a group,
//! labels of an example), with retries ([`http`]).

// Input never panics the library: no unwrap/expect outside tests (errors name what was wrong).
#![deny(clippy::unwrap_used, clippy::expect_used)]

mod error;
pub mod http;
pub mod llama;
pub mod sglang;
pub mod vllm;

pub use error::{Result, ServedError};
pub use http::{RequestPolicy, RequestSummary};

use candor_backend::{
    BackendError, Capabilities, ConstrainedGeneration, ConstrainedOptions, Generation, LabelScore, LabelScores,
    ModelBackend, ModelIdentity, NumberScale, PromptState, ServerInfo, StopReason, WeightsInfo,
};
use futures::future::try_join_all;
use serde_json::{json, Value};
use std::future::Future;

use crate::http::HttpClient;

/// Largest difference, in nats, between the prompt-log-prob path and a generation's own
/// log-prob of the same token that the self-test accepts.
pub const SELF_TEST_TOLERANCE: f64 = 1e-3;

/// Which engine's API a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// vLLM's OpenAI-compatible server.
    Vllm,
    /// `candor serve` (vLLM's API over Candor's exact engine).
    Candor,
    /// SGLang's native API (`/generate` with input log-probs).
    Sglang,
    /// llama.cpp's llama-server: label log-probs from forced one-token generations, llama.cpp's
    /// own numbers (approximate).
    LlamaServer,
}

impl Engine {
    /// The name records and manifests carry.
    pub fn name(self) -> &'static str {
        match self {
            Self::Vllm => "vllm",
            Self::Candor => "candor",
            Self::Sglang => "sglang",
            Self::LlamaServer => "llama-server",
        }
    }

    /// Whether its label log-probs are the model's exact ones (vLLM's prompt log-probs come
    /// from the model's own logits; llama.cpp quantizes activations to 8 bits in its products).
    pub fn exact_log_probs(self) -> bool {
        self != Self::LlamaServer
    }
}

/// `--api`: which engine to expect (`auto`: ask the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiChoice {
    /// Read `owned_by` of `/v1/models`.
    #[default]
    Auto,
    /// vLLM (or a server that speaks its API).
    Vllm,
    /// SGLang's native API.
    Sglang,
    /// llama.cpp's llama-server.
    LlamaServer,
}

impl std::str::FromStr for ApiChoice {
    type Err = ServedError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "vllm" => Ok(Self::Vllm),
            "sglang" => Ok(Self::Sglang),
            "llama-server" => Ok(Self::LlamaServer),
            other => Err(ServedError::Setup(format!("--api `{other}`: expected auto, vllm, sglang or llama-server"))),
        }
    }
}

/// Which server and model, and how to talk to it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedOptions {
    /// `http(s)://HOST:PORT`, with or without a trailing `/v1`.
    pub url: String,
    /// The model name requests carry (`None`: the server's only model).
    pub model: Option<String>,
    /// Which engine to expect.
    pub api: ApiChoice,
    /// Concurrency, retries, timeouts.
    pub policy: RequestPolicy,
}

/// Whether `spec` names a served model (an `http://` or `https://` URL).
pub fn is_server_url(spec: &str) -> bool {
    spec.starts_with("http://") || spec.starts_with("https://")
}

/// A served model as a [`ModelBackend`].
pub struct ServedBackend {
    client: HttpClient,
    runtime: tokio::runtime::Runtime,
    engine: Engine,
    model: String,
    identity: ModelIdentity,
    has_chat_template: bool,
}

/// A served prompt: its token ids (the server holds no state between requests) and the
/// chunks they were given in (prefill, then each extension), which `candor serve` uses to
/// process the prompt the way a local run would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedPrefix {
    tokens: Vec<u32>,
    chunks: Vec<usize>,
}

impl PromptState for ServedPrefix {
    fn tokens(&self) -> &[u32] {
        &self.tokens
    }
}

/// A served-backend error as the seam's error.
fn backend_error(error: ServedError) -> BackendError {
    match error {
        ServedError::Inexact(message) => BackendError::Unsupported(message),
        other => BackendError::Model(Box::new(other)),
    }
}

impl ServedBackend {
    /// Connects: finds the model and the engine, reads the context window, checks the chat
    /// rendering and runs the self-test.
    pub fn connect(options: &ServedOptions) -> Result<Self> {
        let base = options.url.trim_end_matches('/').trim_end_matches("/v1").to_string();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ServedError::Setup(format!("async runtime: {e}")))?;
        let client = HttpClient::new(&base, options.policy)?;
        let cards = runtime.block_on(vllm::models(&client))?;
        let card = choose_model(&cards, options.model.as_deref(), &base)?;
        let engine = choose_engine(options.api, card, &base)?;
        let (context_length, has_chat_template, revision, build) = match engine {
            Engine::LlamaServer => {
                let props = runtime.block_on(llama::props(&client))?;
                (props.context_length, props.has_chat_template, props.model_path, format!(" {}", props.build_info))
            }
            Engine::Vllm | Engine::Candor | Engine::Sglang => {
                let context_length = card.max_model_len.ok_or_else(|| ServedError::Malformed {
                    url: format!("{base}/v1/models"),
                    what: format!("`max_model_len` of model `{}` (the context window)", card.id),
                })?;
                let has_chat_template = runtime.block_on(vllm::tokenize_chat(&client, &card.id, "ping")).is_ok();
                let revision = match engine {
                    Engine::Sglang => runtime.block_on(sglang_revision(&client))?,
                    _ => card.weights_sha256.clone().or_else(|| card.root.clone()).unwrap_or_default(),
                };
                (context_length, has_chat_template, revision, String::new())
            }
        };
        let log_probs = match engine.exact_log_probs() {
            true => "exact (the server's prompt log-probs)",
            false => "approximate (llama.cpp's own: 8-bit activation products; forced one-token generations)",
        };
        let identity = ModelIdentity {
            spec: options.url.clone(),
            source: format!("{base} ({})", card.id),
            architecture: "served".into(),
            context_length,
            vocab_size: 0,
            weights: WeightsInfo {
                hash_kind: match card.weights_sha256 {
                    Some(_) => "served_weights_sha256".into(),
                    None => "served_model_path".into(),
                },
                sha256: revision.clone(),
                ..WeightsInfo::default()
            },
            compute_dtype: format!("as served by {}{build}", engine.name()),
            device: "server".into(),
            chat_template: None,
            chat_template_sha256: None,
            server: Some(ServerInfo {
                url: base.clone(),
                engine: engine.name().into(),
                model: card.id.clone(),
                revision,
                log_probs: log_probs.into(),
            }),
        };
        let backend = Self { client, runtime, engine, model: card.id.clone(), identity, has_chat_template };
        backend.self_test()?;
        Ok(backend)
    }

    /// What was sent so far.
    pub fn request_summary(&self) -> RequestSummary {
        self.client.log.summary()
    }

    /// The engine serving the model.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Runs `future` on the backend's runtime.
    fn block_on<T>(&self, future: impl Future<Output = Result<T>>) -> candor_backend::Result<T> {
        self.runtime.block_on(future).map_err(backend_error)
    }

    /// One known text's greedy next token: its log-prob as generated and as a prompt token
    /// must agree, or the server's prompt log-probs are not the model's.
    fn self_test(&self) -> Result<()> {
        self.runtime.block_on(async {
            let base = self.client.base();
            let prompt = self.tokenize("The capital of France is", true).await?;
            let generated = self.complete(&prompt, 1, None).await?;
            let (Some(&token), Some(&generated_lp)) = (generated.token_ids.first(), generated.token_log_probs.first()) else {
                return Err(ServedError::Inexact(format!("{base}: the self-test's one-token generation returned no token with a log-prob")));
            };
            let scored = self.continuation_log_probs(&prompt, &[], &[vec![token]]).await?;
            let prompt_lp = scored[0][0];
            match (prompt_lp - generated_lp).abs() <= SELF_TEST_TOLERANCE {
                true => Ok(()),
                false => Err(ServedError::Inexact(format!(
                    "{base}: self-test failed: token {token} after \"The capital of France is\" has log-prob {generated_lp} as generated but {prompt_lp} as scored (they must agree to {SELF_TEST_TOLERANCE})"
                ))),
            }
        })
    }

    /// `text`'s ids on the server (`add_special`: with the BOS the model wants).
    async fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        match self.engine {
            Engine::LlamaServer => llama::tokenize(&self.client, text, add_special).await,
            Engine::Vllm | Engine::Candor | Engine::Sglang => vllm::tokenize(&self.client, &self.model, text, add_special).await,
        }
    }

    /// The text of `ids` on the server.
    async fn detokenize(&self, ids: &[u32]) -> Result<String> {
        match self.engine {
            Engine::LlamaServer => llama::detokenize(&self.client, ids).await,
            Engine::Sglang => sglang::detokenize(&self.client, &self.model, ids).await,
            Engine::Vllm | Engine::Candor => vllm::detokenize(&self.client, &self.model, ids).await,
        }
    }

    /// One user message through the server's chat template, with the generation prompt.
    async fn chat_text(&self, user_message: &str) -> Result<String> {
        match self.engine {
            Engine::LlamaServer => llama::apply_template(&self.client, user_message).await,
            Engine::Sglang => {
                let ids = sglang::tokenize_chat(&self.client, &self.model, user_message).await?;
                self.prompt_text(&ids).await
            }
            Engine::Vllm | Engine::Candor => {
                let ids = vllm::tokenize_chat(&self.client, &self.model, user_message).await?;
                self.prompt_text(&ids).await
            }
        }
    }

    /// The log-prob of every token of each continuation after `prompt`: vLLM's prompt
    /// log-probs of all continuations in one request, or one forced generation per token on
    /// llama-server.
    async fn continuation_log_probs(&self, prompt: &[u32], chunks: &[usize], continuations: &[Vec<u32>]) -> Result<Vec<Vec<f64>>> {
        match self.engine {
            Engine::LlamaServer => {
                let forced = continuations.iter().map(|ids| {
                    try_join_all(ids.iter().enumerate().map(move |(j, &target)| {
                        let context = [prompt, &ids[..j]].concat();
                        async move { llama::forced_log_prob(&self.client, &context, target).await }
                    }))
                });
                try_join_all(forced).await
            }
            Engine::Sglang => sglang::continuation_log_probs(&self.client, prompt, continuations).await,
            Engine::Vllm | Engine::Candor => {
                let prompts: Vec<Vec<u32>> = continuations.iter().map(|ids| [prompt, ids.as_slice()].concat()).collect();
                let chunks = if self.engine == Engine::Candor { chunks } else { &[] };
                let all = vllm::prompt_log_probs(&self.client, &self.model, &prompts, chunks).await?;
                Ok(all.iter().map(|lps| lps[prompt.len()..].iter().map(|lp| lp.unwrap_or(f64::NAN)).collect()).collect())
            }
        }
    }

    /// A greedy completion, constrained to `schema` when given.
    async fn complete(&self, prompt: &[u32], max_tokens: usize, constraint: Option<(&Value, usize)>) -> Result<vllm::Completion> {
        match self.engine {
            Engine::LlamaServer => {
                let (text, token_ids, token_log_probs, eos) = llama::complete(&self.client, prompt, max_tokens, constraint.map(|(schema, _)| schema)).await?;
                let finish_reason = if eos { "stop" } else { "length" }.to_string();
                Ok(vllm::Completion { text, token_ids, token_log_probs, finish_reason })
            }
            Engine::Sglang => {
                let (text, token_ids, token_log_probs, eos) = sglang::complete(&self.client, prompt, max_tokens, constraint.map(|(schema, _)| schema)).await?;
                let finish_reason = if eos { "stop" } else { "length" }.to_string();
                Ok(vllm::Completion { text, token_ids, token_log_probs, finish_reason })
            }
            Engine::Vllm | Engine::Candor => vllm::complete(&self.client, &self.model, prompt, max_tokens, constraint).await,
        }
    }

    /// The text of a prompt's ids, checked to tokenize back to them.
    async fn prompt_text(&self, ids: &[u32]) -> Result<String> {
        let text = self.detokenize(ids).await?;
        let again = self.tokenize(&text, false).await?;
        match again == ids {
            true => Ok(text),
            false => Err(ServedError::Inexact(format!(
                "{}: a prompt's {} tokens do not survive /detokenize then /tokenize ({} tokens come back), so labels cannot be tokenized in its context",
                self.client.base(),
                ids.len(),
                again.len()
            ))),
        }
    }

    /// The label scores after one prompt: each label's ids as they follow the prompt's text,
    /// all label prompts' log-probs in one request.
    async fn score_one(&self, prefix: &ServedPrefix, continuations: &[String]) -> Result<LabelScores> {
        let prompt = prefix.tokens.as_slice();
        if prompt.is_empty() || continuations.is_empty() {
            return Err(ServedError::Setup("label scoring needs a non-empty prompt and at least one label".into()));
        }
        let text = self.prompt_text(prompt).await?;
        let label_ids = try_join_all(continuations.iter().map(|label| self.ids_after(prompt, &text, label))).await?;
        let log_probs = self.continuation_log_probs(prompt, &prefix.chunks, &label_ids).await?;
        let labels: Vec<LabelScore> = continuations
            .iter()
            .zip(&label_ids)
            .zip(&log_probs)
            .map(|((label, ids), lps)| LabelScore {
                label: label.clone(),
                token_ids: ids.clone(),
                log_prob: lps.iter().sum(),
                first_token_log_prob: lps[0],
            })
            .collect();
        Ok(LabelScores { first_token_mass_outside: mass_outside(&labels), labels })
    }

    /// The ids `label` adds after the prompt `prompt` (whose text is `text`).
    async fn ids_after(&self, prompt: &[u32], text: &str, label: &str) -> Result<Vec<u32>> {
        let all = self.tokenize(&format!("{text}{label}"), false).await?;
        match all.strip_prefix(prompt) {
            Some(ids) if !ids.is_empty() => Ok(ids.to_vec()),
            _ => Err(ServedError::Inexact(format!(
                "the label `{label}` merges with the prompt's last token when tokenized after it (or adds no token), so it has no log-prob of its own"
            ))),
        }
    }

    /// Refuses a constrained dict of percentages: the dict schema sent to servers bounds the
    /// numbers to [0, 1].
    fn check_scale(&self, options: &ConstrainedOptions) -> candor_backend::Result<()> {
        match options.scale {
            NumberScale::Fraction => Ok(()),
            NumberScale::Percent => Err(BackendError::Unsupported(format!(
                "constrained percentages (--elicitation percent) on {}: its dict schema holds probabilities from 0 to 1; use --verbalized free",
                self.identity.backend()
            ))),
        }
    }

    /// A constrained dict: the server's answer under the schema, checked against it.
    async fn constrained_one(&self, prompt: &[u32], labels: &[String], options: &ConstrainedOptions) -> Result<ConstrainedGeneration> {
        let schema = dict_schema(labels);
        let budget = 16 + labels.iter().map(|l| l.len() + options.max_fraction_digits + 8).sum::<usize>();
        let max_tokens = budget.min(self.identity.context_length.saturating_sub(prompt.len()).max(1));
        let completion = self.complete(prompt, max_tokens, Some((&schema, options.max_fraction_digits))).await?;
        if !follows_schema(&completion.text, labels) {
            self.client.log.record_schema_violation();
        }
        Ok(ConstrainedGeneration { text: completion.text, numbers: Vec::new() })
    }

    /// A greedy free completion.
    async fn generate_one(&self, prompt: &[u32], max_tokens: usize) -> Result<Generation> {
        let completion = self.complete(prompt, max_tokens, None).await?;
        let stop_reason = match completion.finish_reason.as_str() {
            "stop" => StopReason::Eos,
            _ if prompt.len() + completion.token_ids.len() >= self.identity.context_length => StopReason::ContextFull,
            _ => StopReason::MaxTokens,
        };
        Ok(Generation { text: completion.text, token_ids: completion.token_ids, stop_reason })
    }
}

/// A prompt's ids: the tokenization with the model's special tokens (`special`), unless what
/// they add is already at the start of the plain one (a template that writes BOS itself):
/// never a double BOS.
fn prompt_ids(plain: Vec<u32>, special: Vec<u32>) -> Vec<u32> {
    let added = special.len().saturating_sub(plain.len());
    let already_there = added > 0 && special.ends_with(&plain) && plain.starts_with(&special[..added]);
    if already_there {
        plain
    } else {
        special
    }
}

/// The model to use: the named one, or the server's only one.
fn choose_model<'a>(cards: &'a [vllm::ModelCard], wanted: Option<&str>, base: &str) -> Result<&'a vllm::ModelCard> {
    let names = || cards.iter().map(|c| c.id.as_str()).collect::<Vec<_>>().join(", ");
    match (wanted, cards) {
        (Some(name), _) => cards
            .iter()
            .find(|card| card.id == name)
            .ok_or_else(|| ServedError::Setup(format!("{base} does not serve a model named `{name}` (it serves: {})", names()))),
        (None, [only]) => Ok(only),
        (None, []) => Err(ServedError::Setup(format!("{base}/v1/models lists no model"))),
        (None, _) => Err(ServedError::Setup(format!("{base} serves several models ({}); name one with --served-model", names()))),
    }
}

/// The engine behind `card`, as asked or as the server says (`owned_by` of `/v1/models`).
fn choose_engine(api: ApiChoice, card: &vllm::ModelCard, base: &str) -> Result<Engine> {
    match (api, card.owned_by.as_str()) {
        (ApiChoice::Sglang, _) | (ApiChoice::Auto, "sglang") => Ok(Engine::Sglang),
        (ApiChoice::LlamaServer, _) | (ApiChoice::Auto, "llamacpp") => Ok(Engine::LlamaServer),
        (ApiChoice::Vllm | ApiChoice::Auto, "candor") => Ok(Engine::Candor),
        (ApiChoice::Vllm, _) | (ApiChoice::Auto, "vllm") => Ok(Engine::Vllm),
        (ApiChoice::Auto, other) => Err(ServedError::Setup(format!(
            "{base}/v1/models says the model is served by `{other}`, not vLLM, SGLang, llama-server or candor serve; name the API with --api vllm|sglang|llama-server if the server speaks one (Ollama and TGI give no label log-probs)"
        ))),
    }
}

/// SGLang's model path and weight version (`/get_model_info`).
async fn sglang_revision(client: &HttpClient) -> Result<String> {
    let info = client.get("/get_model_info").await?;
    let path = info["model_path"].as_str().unwrap_or_default();
    Ok(match info["weight_version"].as_str() {
        Some(version) => format!("{path}@{version}"),
        None => path.to_string(),
    })
}

/// 1 − the probability of the distinct first tokens of the labels.
fn mass_outside(labels: &[LabelScore]) -> f64 {
    let mut firsts: Vec<(u32, f64)> = labels.iter().map(|l| (l.token_ids[0], l.first_token_log_prob)).collect();
    firsts.sort_by_key(|&(id, _)| id);
    firsts.dedup_by_key(|&mut (id, _)| id);
    (1.0 - firsts.iter().map(|(_, lp)| lp.exp()).sum::<f64>()).max(0.0)
}

/// The JSON schema of the verbalized dict: one number in [0, 1] per label, in label order,
/// all required, nothing else.
pub fn dict_schema(labels: &[String]) -> Value {
    let properties: serde_json::Map<String, Value> =
        labels.iter().map(|label| (label.clone(), json!({ "type": "number", "minimum": 0, "maximum": 1 }))).collect();
    json!({ "type": "object", "properties": properties, "required": labels, "additionalProperties": false })
}

/// Whether `text` is a JSON object with exactly `labels` as keys, in order, each a number in
/// [0, 1].
pub fn follows_schema(text: &str, labels: &[String]) -> bool {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<Value>(text) else { return false };
    let keys_in_order = ordered_keys(text);
    keys_in_order.as_deref() == Some(labels)
        && map.len() == labels.len()
        && map.values().all(|v| v.as_f64().is_some_and(|x| (0.0..=1.0).contains(&x)))
}

/// The keys of a flat JSON object in the order written (serde_json's map may sort them);
/// `None` when `text` is not one JSON object and nothing else.
fn ordered_keys(text: &str) -> Option<Vec<String>> {
    use serde_json::Deserializer;
    let mut rest = text.trim().strip_prefix('{')?.trim_start();
    let mut keys = Vec::new();
    if let Some(after) = rest.strip_prefix('}') {
        return after.trim().is_empty().then_some(keys);
    }
    loop {
        let mut key = Deserializer::from_str(rest).into_iter::<Value>();
        keys.push(key.next()?.ok()?.as_str()?.to_string());
        let after_colon = rest[key.byte_offset()..].trim_start().strip_prefix(':')?;
        let mut value = Deserializer::from_str(after_colon).into_iter::<Value>();
        value.next()?.ok()?;
        let after_value = after_colon[value.byte_offset()..].trim_start();
        match after_value.chars().next()? {
            '}' => return after_value[1..].trim().is_empty().then_some(keys),
            ',' => rest = after_value[1..].trim_start(),
            _ => return None,
        }
    }
}

impl ModelBackend for ServedBackend {
    type Prefix = ServedPrefix;

    fn identity(&self) -> &ModelIdentity {
        &self.identity
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            exact_log_probs: self.engine.exact_log_probs(),
            constrained_generation: true,
            batched_continuations: true,
            batched_generation: true,
            // Served engines sample on their side; their draws are not Candor's seeded ones.
            sampled_generation: false,
            // The dict schema sent to servers bounds numbers to [0, 1].
            constrained_percentages: false,
        }
    }

    /// As many prompts as requests in flight.
    fn suggested_batch(&self, _positions: usize) -> usize {
        self.client.concurrency()
    }

    fn chat_prompt(&self, user_message: &str) -> candor_backend::Result<String> {
        self.block_on(self.chat_text(user_message))
    }

    fn has_chat_template(&self) -> bool {
        self.has_chat_template
    }

    fn encode(&self, text: &str) -> candor_backend::Result<Vec<u32>> {
        self.block_on(self.tokenize(text, false))
    }

    fn decode(&self, ids: &[u32]) -> candor_backend::Result<String> {
        self.block_on(self.detokenize(ids))
    }

    /// The server's ids with its special tokens, unless the text already starts with what
    /// they add (a chat template that writes BOS itself): never a double BOS.
    fn encode_prompt(&self, text: &str) -> candor_backend::Result<Vec<u32>> {
        self.block_on(async {
            let plain = self.tokenize(text, false).await?;
            let special = self.tokenize(text, true).await?;
            Ok(prompt_ids(plain, special))
        })
    }

    fn prefill(&self, tokens: &[u32]) -> candor_backend::Result<ServedPrefix> {
        Ok(ServedPrefix { tokens: tokens.to_vec(), chunks: vec![tokens.len()] })
    }

    fn extend(&self, prefix: &ServedPrefix, tokens: &[u32]) -> candor_backend::Result<ServedPrefix> {
        let chunks = match tokens.is_empty() {
            true => prefix.chunks.clone(),
            false => [prefix.chunks.as_slice(), &[tokens.len()]].concat(),
        };
        Ok(ServedPrefix { tokens: [prefix.tokens.as_slice(), tokens].concat(), chunks })
    }

    fn score_labels(&self, prefix: &ServedPrefix, continuations: &[String]) -> candor_backend::Result<LabelScores> {
        self.block_on(self.score_one(prefix, continuations))
    }

    fn score_labels_batch(&self, prefixes: &[&ServedPrefix], continuations: &[String]) -> candor_backend::Result<Vec<LabelScores>> {
        self.block_on(try_join_all(prefixes.iter().map(|prefix| self.score_one(prefix, continuations))))
    }

    fn generate(&self, prefix: &ServedPrefix, max_tokens: usize) -> candor_backend::Result<Generation> {
        self.block_on(self.generate_one(&prefix.tokens, max_tokens))
    }

    fn generate_batch(&self, prefixes: &[&ServedPrefix], max_tokens: usize) -> candor_backend::Result<Vec<Generation>> {
        self.block_on(try_join_all(prefixes.iter().map(|prefix| self.generate_one(&prefix.tokens, max_tokens))))
    }

    fn generate_constrained(&self, prefix: &ServedPrefix, labels: &[String], options: &ConstrainedOptions) -> candor_backend::Result<ConstrainedGeneration> {
        self.check_scale(options)?;
        self.block_on(self.constrained_one(&prefix.tokens, labels, options))
    }

    fn generate_constrained_batch(
        &self,
        prefixes: &[&ServedPrefix],
        labels: &[String],
        options: &ConstrainedOptions,
    ) -> candor_backend::Result<Vec<ConstrainedGeneration>> {
        self.check_scale(options)?;
        self.block_on(try_join_all(prefixes.iter().map(|prefix| self.constrained_one(&prefix.tokens, labels, options))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn answers_that_break_the_dict_schema_are_caught() {
        let two = labels(&["joy", "anger"]);
        assert!(follows_schema(r#"{"joy": 0.7, "anger": 0.3}"#, &two));
        assert!(follows_schema(r#" {"joy":1,"anger":0} "#, &two));
        // The server dropped the constraint: order, extra keys, missing keys, ranges, prose.
        assert!(!follows_schema(r#"{"anger": 0.3, "joy": 0.7}"#, &two));
        assert!(!follows_schema(r#"{"joy": 0.7, "anger": 0.3, "fear": 0}"#, &two));
        assert!(!follows_schema(r#"{"joy": 0.7}"#, &two));
        assert!(!follows_schema(r#"{"joy": 1.7, "anger": 0.3}"#, &two));
        assert!(!follows_schema(r#"{"joy": "high", "anger": 0.3}"#, &two));
        assert!(!follows_schema("The answer is joy.", &two));
        assert!(!follows_schema(r#"{"joy": 0.7, "anger": 0.3} and more"#, &two));
    }

    #[test]
    fn the_dict_schema_names_every_label_in_order() {
        let schema = dict_schema(&labels(&["b", "a"]));
        let keys: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        assert_eq!(schema["required"], json!(["b", "a"]));
        assert_eq!(schema["additionalProperties"], json!(false));
        assert_eq!(keys.len(), 2);
    }

    #[test]
    fn the_mass_outside_counts_a_shared_first_token_once() {
        let score = |id: u32, lp: f64| LabelScore { label: String::new(), token_ids: vec![id, 9], log_prob: lp, first_token_log_prob: lp };
        let labels = [score(1, 0.25f64.ln()), score(1, 0.25f64.ln()), score(2, 0.5f64.ln())];
        assert!((mass_outside(&labels) - 0.25).abs() < 1e-12);
    }

    #[test]
    fn a_prompt_never_gets_a_second_bos() {
        // The model wants BOS (2): added to a plain prompt, not to one whose template wrote it.
        assert_eq!(prompt_ids(vec![7, 8], vec![2, 7, 8]), vec![2, 7, 8]);
        assert_eq!(prompt_ids(vec![2, 7, 8], vec![2, 2, 7, 8]), vec![2, 7, 8]);
        // A model without BOS: both tokenizations agree.
        assert_eq!(prompt_ids(vec![7, 8], vec![7, 8]), vec![7, 8]);
    }

    #[test]
    fn the_model_is_the_named_one_or_the_only_one() {
        let card = |id: &str| vllm::ModelCard { id: id.into(), owned_by: "vllm".into(), root: None, max_model_len: Some(8), weights_sha256: None };
        let one = [card("m")];
        assert_eq!(choose_model(&one, None, "u").unwrap().id, "m");
        let two = [card("a"), card("b")];
        assert!(choose_model(&two, None, "u").unwrap_err().to_string().contains("a, b"));
        let err = choose_model(&two, Some("c"), "u").unwrap_err().to_string();
        assert!(err.contains("`c`") && err.contains("a, b"), "{err}");
    }
}
