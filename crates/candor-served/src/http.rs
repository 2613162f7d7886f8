//! The HTTP side of the served backend: JSON requests to one server with a bounded number in
//! flight, retries with exponential backoff on what a busy or restarting server answers
//! (connection failures, timeouts, 429, 5xx), and a log of what was sent. A request that still
//! fails after its retries is an error: the run engine then writes no record for its examples,
//! and the run resumes from them later.

use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;

use crate::error::{Result, ServedError};

/// How requests are sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestPolicy {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Further attempts after a failed one (on connection errors, timeouts, 429 and 5xx).
    pub retries: u32,
    /// Time limit of one attempt.
    pub timeout: Duration,
    /// Wait before the first retry (doubled each time, at most 8 s).
    pub first_backoff: Duration,
}

impl Default for RequestPolicy {
    fn default() -> Self {
        Self { concurrency: 4, retries: 4, timeout: Duration::from_secs(600), first_backoff: Duration::from_millis(500) }
    }
}

/// Counts of what was sent, for the run's closing line.
#[derive(Debug, Default)]
pub struct RequestLog {
    requests: AtomicU64,
    retries: AtomicU64,
    failures: AtomicU64,
    prompt_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    schema_violations: AtomicU64,
}

/// A snapshot of a [`RequestLog`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestSummary {
    /// Requests answered (successfully or not), retries excluded.
    pub requests: u64,
    /// Attempts repeated after a retryable failure.
    pub retries: u64,
    /// Requests that failed for good.
    pub failures: u64,
    /// Prompt tokens the server reported processing.
    pub prompt_tokens: u64,
    /// Tokens it generated.
    pub generated_tokens: u64,
    /// Constrained answers that broke their JSON schema (the server dropped the constraint).
    pub schema_violations: u64,
}

impl std::fmt::Display for RequestSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests ({} retried, {} failed), {} prompt and {} generated tokens, {} constrained answers broke their schema",
            self.requests, self.retries, self.failures, self.prompt_tokens, self.generated_tokens, self.schema_violations
        )
    }
}

impl RequestLog {
    /// The counts so far.
    pub fn summary(&self) -> RequestSummary {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        RequestSummary {
            requests: get(&self.requests),
            retries: get(&self.retries),
            failures: get(&self.failures),
            prompt_tokens: get(&self.prompt_tokens),
            generated_tokens: get(&self.generated_tokens),
            schema_violations: get(&self.schema_violations),
        }
    }

    /// Adds a response's `usage` (prompt and completion tokens), when it has one.
    pub fn record_usage(&self, response: &Value) {
        let count = |key: &str| response["usage"][key].as_u64().unwrap_or(0);
        self.prompt_tokens.fetch_add(count("prompt_tokens"), Ordering::Relaxed);
        self.generated_tokens.fetch_add(count("completion_tokens"), Ordering::Relaxed);
    }

    /// Counts a constrained answer that broke its schema.
    pub fn record_schema_violation(&self) {
        self.schema_violations.fetch_add(1, Ordering::Relaxed);
    }
}

/// A JSON client of one server.
pub struct HttpClient {
    base: String,
    client: reqwest::Client,
    slots: Semaphore,
    policy: RequestPolicy,
    /// What was sent.
    pub log: RequestLog,
}

/// How one attempt ended.
enum Attempt {
    Done(Value),
    /// Worth another try (the reason, for the final error).
    Retry(String),
    /// Not worth another (a 4xx other than 429, an unreadable body).
    Fail(ServedError),
}

impl HttpClient {
    /// A client of the server at `base` (scheme, host, port; no trailing slash).
    pub fn new(base: &str, policy: RequestPolicy) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(policy.timeout)
            .build()
            .map_err(|e| ServedError::Setup(format!("HTTP client: {e}")))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            client,
            slots: Semaphore::new(policy.concurrency.max(1)),
            policy,
            log: RequestLog::default(),
        })
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Requests in flight at once.
    pub fn concurrency(&self) -> usize {
        self.policy.concurrency.max(1)
    }

    /// `GET path` as JSON, with retries.
    pub async fn get(&self, path: &str) -> Result<Value> {
        self.send(path, None).await
    }

    /// `POST path` with a JSON body, with retries.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(path, Some(body)).await
    }

    async fn send(&self, path: &str, body: Option<&Value>) -> Result<Value> {
        let _slot = self.slots.acquire().await.map_err(|_| ServedError::Setup("request slots closed".into()))?;
        let url = format!("{}{path}", self.base);
        let mut backoff = self.policy.first_backoff;
        let mut attempt = 0;
        let outcome = loop {
            match self.attempt(&url, body).await {
                Attempt::Done(value) => break Ok(value),
                Attempt::Fail(error) => break Err(error),
                Attempt::Retry(reason) if attempt >= self.policy.retries => {
                    break Err(ServedError::Unavailable { url: url.clone(), attempts: attempt + 1, last: reason })
                }
                Attempt::Retry(_) => {
                    attempt += 1;
                    self.log.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(8));
                }
            }
        };
        self.log.requests.fetch_add(1, Ordering::Relaxed);
        if outcome.is_err() {
            self.log.failures.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    async fn attempt(&self, url: &str, body: Option<&Value>) -> Attempt {
        let request = match body {
            Some(body) => self.client.post(url).json(body),
            None => self.client.get(url),
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Attempt::Retry(describe(&error)),
        };
        let status = response.status();
        let text = match response.text().await {
            Ok(text) => text,
            Err(error) => return Attempt::Retry(describe(&error)),
        };
        if status.as_u16() == 429 || status.is_server_error() {
            return Attempt::Retry(format!("HTTP {status}: {}", error_message(&text)));
        }
        if !status.is_success() {
            return Attempt::Fail(ServedError::Refused { url: url.to_string(), status: status.as_u16(), message: error_message(&text) });
        }
        match serde_json::from_str(&text) {
            Ok(value) => Attempt::Done(value),
            Err(error) => Attempt::Fail(ServedError::Malformed { url: url.to_string(), what: format!("the body is not JSON ({error}): {}", excerpt(&text)) }),
        }
    }
}

/// A reqwest error with its cause chain (connection refused, timed out, ...).
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The message of an error body in OpenAI's shapes (`{"error": {"message"}}` or vLLM's older
/// flat `{"message"}`), llama.cpp's (`{"error": {"message"}}`) or the text itself.
pub fn error_message(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(value) => value["error"]["message"]
            .as_str()
            .or_else(|| value["message"].as_str())
            .or_else(|| value["error"].as_str())
            .or_else(|| value["detail"].as_str())
            .map_or_else(|| excerpt(body), str::to_string),
        Err(_) => excerpt(body),
    }
}

/// The first 300 characters of `text`.
fn excerpt(text: &str) -> String {
    let cut: String = text.chars().take(300).collect();
    match cut.len() < text.len() {
        true => format!("{cut}…"),
        false => cut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_read_from_every_engines_shape() {
        assert_eq!(error_message(r#"{"error": {"message": "no such model", "code": 404}}"#), "no such model");
        assert_eq!(error_message(r#"{"object": "error", "message": "bad", "type": "BadRequestError"}"#), "bad");
        assert_eq!(error_message(r#"{"detail": "Not Found"}"#), "Not Found");
        assert_eq!(error_message("plain text"), "plain text");
        assert!(error_message(&"x".repeat(1000)).ends_with('…'));
    }
}
