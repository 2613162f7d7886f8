//! `candor serve`: a [`ModelBackend`] — Candor's exact local engine — behind the subset of
//! vLLM's OpenAI-compatible HTTP API that calibration tools use, so lm-evaluation-harness's
//! `local-completions`, any OpenAI client, or `candor run --model http://…` get the model's
//! exact probabilities:
//!
//! - `GET /v1/models`, `GET /health`
//! - `POST /tokenize` (text, or one user message through the chat template), `POST /detokenize`
//! - `POST /v1/completions`: text or token-id prompts (batched), `prompt_logprobs`, `echo` +
//!   `logprobs`, `max_tokens`, greedy only; `response_format` `json_schema` for a flat dict of
//!   numbers runs Candor's constrained decoder
//! - `POST /v1/chat/completions`: one user message, greedy, `logprobs`/`top_logprobs`, the same
//!   `response_format`
//!
//! One engine thread owns the model ([`engine`]); requests wait in a bounded queue (a full queue
//! answers 503 with `retry-after`), bodies are size-limited, and errors come in OpenAI's shape.
//! It binds to 127.0.0.1 unless told otherwise.

// Input never panics the library: no unwrap/expect outside tests (errors name what was wrong).
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod api;
pub mod engine;
mod routes;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use candor_backend::ModelBackend;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::engine::EngineHandle;
use crate::routes::Shared;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address asked for.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP server or its runtime failed.
    #[error("the HTTP server failed: {0}")]
    Server(#[from] std::io::Error),
}

/// What one request may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Most prompts in one completion request.
    pub max_prompts: usize,
    /// Most log-prob alternatives per token.
    pub max_logprobs: usize,
    /// Requests waiting for the engine before new ones get a 503.
    pub queue: usize,
    /// `max_tokens` of a chat completion that does not say.
    pub default_chat_max_tokens: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self { max_body_bytes: 8 << 20, max_prompts: 256, max_logprobs: 20, queue: 64, default_chat_max_tokens: 256 }
    }
}

/// Where and as what to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// Address to bind (`127.0.0.1` unless the user asks for more).
    pub host: String,
    /// Port (0: any free port; the bound address is printed).
    pub port: u16,
    /// The name clients send as `model` (e.g. the model file's stem).
    pub model_name: String,
    /// Request limits.
    pub limits: ServerLimits,
}

/// The router of the API over `backend` (started on its engine thread).
pub fn router<B: ModelBackend + Send + 'static>(backend: B, options: &ServeOptions) -> Router {
    let identity = backend.identity().clone();
    let model_card = serde_json::json!({
        "id": options.model_name,
        "object": "model",
        "created": 0,
        "owned_by": "candor",
        "root": identity.source,
        "max_model_len": identity.context_length,
        "weights_sha256": identity.weights.sha256,
    });
    let shared = Arc::new(Shared {
        engine: EngineHandle::start(backend, options.limits.queue),
        model_name: options.model_name.clone(),
        model_card,
        context_length: identity.context_length,
        vocab_size: identity.vocab_size,
        limits: options.limits,
    });
    Router::new()
        .route("/health", get(routes::health))
        .route("/v1/models", get(routes::models::<B>))
        .route("/tokenize", post(routes::tokenize::<B>))
        .route("/detokenize", post(routes::detokenize::<B>))
        .route("/v1/completions", post(routes::completions::<B>))
        .route("/v1/chat/completions", post(routes::chat_completions::<B>))
        .layer(DefaultBodyLimit::max(options.limits.max_body_bytes))
        .with_state(shared)
}

/// Serves `backend` until the process is interrupted; `on_listening` hears the bound address
/// first (the port, when 0 was asked for).
pub fn serve<B: ModelBackend + Send + 'static>(
    backend: B,
    options: &ServeOptions,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let address = format!("{}:{}", options.host, options.port);
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|source| ServeError::Bind { address: address.clone(), source })?;
        on_listening(listener.local_addr()?);
        let app = router(backend, options);
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        Ok(())
    })
}

#[cfg(test)]
mod fuzz;
