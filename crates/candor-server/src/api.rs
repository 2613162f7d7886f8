//! The wire format of `candor serve`: the request and response bodies of the subset of vLLM's
//! OpenAI-compatible API it answers (`/v1/models`, `/tokenize`, `/detokenize`,
//! `/v1/completions`, `/v1/chat/completions`), and the OpenAI error shape. Requests are
//! checked here, before anything reaches the engine: unknown sampling modes, streaming and
//! more than one choice are refused with the field that asked for them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why a request was refused: the HTTP status and the OpenAI error body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// `invalid_request_error`, `not_found_error`, `server_busy` or `internal_error`.
    pub kind: &'static str,
    /// What was wrong, naming the field.
    pub message: String,
}

impl ApiError {
    /// A 400: the request is malformed or asks for something Candor does not do.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self { status: 400, kind: "invalid_request_error", message: message.into() }
    }

    /// A 404: an unknown model name.
    pub fn unknown_model(name: &str, served: &str) -> Self {
        Self {
            status: 404,
            kind: "not_found_error",
            message: format!("the model `{name}` does not exist; this server serves `{served}`"),
        }
    }

    /// A 503: the engine's queue is full (the client should retry later).
    pub fn busy(capacity: usize) -> Self {
        Self {
            status: 503,
            kind: "server_busy",
            message: format!("the engine's queue is full ({capacity} requests waiting); retry later"),
        }
    }

    /// A 500: the engine failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self { status: 500, kind: "internal_error", message: message.into() }
    }

    /// The OpenAI error body: `{"error": {"message", "type", "param", "code"}}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": { "message": self.message, "type": self.kind, "param": null, "code": self.status }
        })
    }
}

impl From<candor_backend::BackendError> for ApiError {
    /// What the request asked for that the model cannot do is the client's error (400); the
    /// model failing is the server's (500).
    fn from(error: candor_backend::BackendError) -> Self {
        use candor_backend::BackendError;
        match error {
            BackendError::Invalid(_) | BackendError::Unsupported(_) => Self::invalid(error.to_string()),
            BackendError::Model(_) | BackendError::Failed { .. } => Self::internal(error.to_string()),
        }
    }
}

/// A prompt as `/v1/completions` accepts it: text, texts, token ids or lists of token ids.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(Vec<String>),
    /// One prompt as token ids.
    Ids(Vec<u32>),
    /// Several prompts as token ids.
    IdLists(Vec<Vec<u32>>),
}

/// One prompt of a completion request, before tokenization.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Text (tokenized with the model's BOS when it wants one, as vLLM does by default).
    Text(String),
    /// Token ids, used as they are.
    Ids(Vec<u32>),
}

impl PromptInput {
    /// The prompts, at least one and at most `limit`.
    pub fn prompts(self, limit: usize) -> Result<Vec<Prompt>, ApiError> {
        let prompts: Vec<Prompt> = match self {
            Self::Text(text) => vec![Prompt::Text(text)],
            Self::Texts(texts) => texts.into_iter().map(Prompt::Text).collect(),
            Self::Ids(ids) => vec![Prompt::Ids(ids)],
            Self::IdLists(lists) => lists.into_iter().map(Prompt::Ids).collect(),
        };
        match prompts.len() {
            0 => Err(ApiError::invalid("`prompt` is empty")),
            n if n > limit => Err(ApiError::invalid(format!("`prompt` has {n} prompts; at most {limit} per request"))),
            _ => Ok(prompts),
        }
    }
}

/// `response_format`: only `json_schema` with a flat object of numbers (a verbalized
/// distribution) is answered.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ResponseFormat {
    /// `json_schema` (`text` means no constraint).
    #[serde(rename = "type")]
    pub kind: String,
    /// The schema, under OpenAI's `{name, schema}` wrapper.
    pub json_schema: Option<NamedSchema>,
}

/// OpenAI's wrapper of a JSON schema.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NamedSchema {
    /// The schema's name (not used).
    #[serde(default)]
    pub name: Option<String>,
    /// The schema itself.
    pub schema: serde_json::Value,
}

impl ResponseFormat {
    /// The labels of the constrained dict this format asks for (`None`: free text). The schema
    /// must be an object whose properties are all numbers, all required, no others: the one
    /// shape Candor's constrained decoder writes (keys in the schema's order, numbers in [0, 1]).
    pub fn labels(&self) -> Result<Option<Vec<String>>, ApiError> {
        match self.kind.as_str() {
            "text" => return Ok(None),
            "json_schema" => {}
            other => {
                return Err(ApiError::invalid(format!(
                    "`response_format.type` `{other}` is not supported (text or json_schema)"
                )))
            }
        }
        let schema = &self
            .json_schema
            .as_ref()
            .ok_or_else(|| ApiError::invalid("`response_format.json_schema` is missing"))?
            .schema;
        let refuse = |what: &str| {
            ApiError::invalid(format!(
                "`response_format.json_schema.schema`: {what}; only a flat object of numbers (one required key per label, no others) is supported"
            ))
        };
        if schema.get("type").and_then(|t| t.as_str()) != Some("object") {
            return Err(refuse("`type` is not `object`"));
        }
        let properties = schema
            .get("properties")
            .and_then(|p| p.as_object())
            .ok_or_else(|| refuse("`properties` is missing"))?;
        let labels: Vec<String> = properties.keys().cloned().collect();
        if labels.is_empty() {
            return Err(refuse("no properties"));
        }
        if let Some((key, _)) = properties
            .iter()
            .find(|(_, p)| !matches!(p.get("type").and_then(|t| t.as_str()), Some("number")))
        {
            return Err(refuse(&format!("property `{key}` is not a number")));
        }
        let required: Vec<&str> = schema
            .get("required")
            .and_then(|r| r.as_array())
            .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        if let Some(missing) = labels.iter().find(|l| !required.contains(&l.as_str())) {
            return Err(refuse(&format!("property `{missing}` is not required")));
        }
        if schema.get("additionalProperties") != Some(&serde_json::Value::Bool(false)) {
            return Err(refuse("`additionalProperties` is not false"));
        }
        Ok(Some(labels))
    }
}

/// Settings every generating request shares, checked the same way on both endpoints.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Sampling {
    /// Must be 0 (or absent): Candor decodes greedily.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Must be 1 (or absent).
    #[serde(default)]
    pub n: Option<u32>,
    /// Must be false (or absent).
    #[serde(default)]
    pub stream: Option<bool>,
    /// Constrained output.
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    /// Most digits after the decimal point of a constrained number (a Candor extension; 3
    /// when absent).
    #[serde(default)]
    pub max_fraction_digits: Option<usize>,
}

impl Sampling {
    /// Refuses anything but one greedy, non-streamed choice.
    pub fn check(&self) -> Result<(), ApiError> {
        if self.temperature.is_some_and(|t| t != 0.0) {
            return Err(ApiError::invalid("`temperature`: only greedy decoding (0) is supported"));
        }
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid("`n`: only one choice per prompt is supported"));
        }
        if self.stream == Some(true) {
            return Err(ApiError::invalid("`stream`: streaming is not supported"));
        }
        Ok(())
    }
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CompletionRequest {
    /// The served model's name.
    pub model: String,
    /// The prompt(s).
    pub prompt: PromptInput,
    /// Most tokens to generate (16 when absent, as OpenAI's default).
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// Log-probs (with this many alternatives) of every prompt token (vLLM's extension).
    #[serde(default)]
    pub prompt_logprobs: Option<usize>,
    /// Log-probs (with this many alternatives) of the returned tokens.
    #[serde(default)]
    pub logprobs: Option<usize>,
    /// Return the prompt in front of the completion (and its tokens' log-probs).
    #[serde(default)]
    pub echo: bool,
    /// Write tokens in `logprobs` as `token_id:<id>` (vLLM's extension).
    #[serde(default)]
    pub return_tokens_as_token_ids: bool,
    /// Lengths of the chunks in which the client processed the prompts' shared prefix (a
    /// Candor extension: Candor's served backend sends it so `candor serve` reproduces the
    /// client's local numbers bit for bit; other servers ignore it).
    #[serde(default)]
    pub candor_prefix_chunks: Vec<usize>,
    /// Greedy-only sampling settings and the response format.
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// One chat message (only a single user message is answered).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `user`.
    pub role: String,
    /// The message text.
    pub content: String,
}

/// The user message of a conversation: exactly one `user` message (Candor renders one user
/// turn of the model's chat template).
pub fn single_user_message(messages: &[ChatMessage]) -> Result<&str, ApiError> {
    match messages {
        [message] if message.role == "user" => Ok(&message.content),
        _ => Err(ApiError::invalid("`messages`: exactly one message with role `user` is supported")),
    }
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChatRequest {
    /// The served model's name.
    pub model: String,
    /// The conversation (one user message).
    pub messages: Vec<ChatMessage>,
    /// Most tokens to generate.
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// OpenAI's newer name for `max_tokens`.
    #[serde(default)]
    pub max_completion_tokens: Option<usize>,
    /// Return the generated tokens' log-probs.
    #[serde(default)]
    pub logprobs: bool,
    /// Alternatives per generated token.
    #[serde(default)]
    pub top_logprobs: Option<usize>,
    /// Greedy-only sampling settings and the response format.
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// `POST /tokenize`: text, or one user message rendered with the chat template.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TokenizeRequest {
    /// The served model's name (optional, as in vLLM).
    #[serde(default)]
    pub model: Option<String>,
    /// Text to tokenize.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Messages to render and tokenize.
    #[serde(default)]
    pub messages: Option<Vec<ChatMessage>>,
    /// Add the model's BOS when it wants one (default true for text, false for messages:
    /// chat templates write it themselves).
    #[serde(default)]
    pub add_special_tokens: Option<bool>,
    /// Append the template's generation prompt (default true).
    #[serde(default)]
    pub add_generation_prompt: Option<bool>,
}

/// `POST /detokenize`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DetokenizeRequest {
    /// The served model's name (optional).
    #[serde(default)]
    pub model: Option<String>,
    /// The ids.
    pub tokens: Vec<u32>,
}

/// vLLM's entry of one token in `prompt_logprobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptLogprobEntry {
    /// Natural log-probability.
    pub logprob: f64,
    /// 1 for the most likely token.
    pub rank: usize,
    /// The token's text.
    pub decoded_token: String,
}

/// vLLM's `prompt_logprobs` of one prompt: `null` for the first token, then per token a map
/// from token id (as a string) to its entry, holding the prompt's token and the top ones.
pub type PromptLogprobs = Vec<Option<BTreeMap<String, PromptLogprobEntry>>>;

/// OpenAI's legacy `logprobs` of a completion choice.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CompletionLogprobs {
    /// Token texts (or `token_id:<id>`).
    pub tokens: Vec<String>,
    /// Their log-probs (`null` for the very first prompt token under `echo`).
    pub token_logprobs: Vec<Option<f64>>,
    /// Alternatives per token (`null` where there are none).
    pub top_logprobs: Vec<Option<BTreeMap<String, f64>>>,
    /// Character offset of each token in the choice's text.
    pub text_offset: Vec<usize>,
}
