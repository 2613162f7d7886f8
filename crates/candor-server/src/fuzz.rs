//! Fuzz target of this crate (driver: tests/support/fuzz.rs; `scripts/fuzz.sh SECONDS`): any
//! request body is parsed and checked by `candor serve`'s request types — prompts, sampling
//! settings, response formats — into a value or a 400, never a panic.

#[path = "../../../tests/support/fuzz.rs"]
mod driver;

use crate::api::{single_user_message, ChatRequest, CompletionRequest, DetokenizeRequest, TokenizeRequest};

#[test]
fn fuzz_http_request_parser() {
    let seeds = [
        r#"{"model": "m", "prompt": [[1, 2, 3], [1, 2, 4]], "max_tokens": 1, "temperature": 0, "prompt_logprobs": 0}"#,
        r#"{"model": "m", "prompt": "hi", "echo": true, "logprobs": 1, "response_format": {"type": "json_schema", "json_schema": {"name": "d", "schema": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"], "additionalProperties": false}}}}"#,
        r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "logprobs": true, "top_logprobs": 5, "n": 2, "stream": true}"#,
        r#"{"prompt": "x", "add_special_tokens": false, "tokens": [4294967295]}"#,
    ];
    driver::fuzz("http_request_parser", seeds.iter().map(|s| s.as_bytes().to_vec()).collect(), |bytes| {
        if let Ok(request) = serde_json::from_slice::<CompletionRequest>(bytes) {
            let _ = request.sampling.check();
            let _ = request.sampling.response_format.as_ref().map(|f| f.labels());
            let _ = request.prompt.prompts(256);
        }
        if let Ok(request) = serde_json::from_slice::<ChatRequest>(bytes) {
            let _ = single_user_message(&request.messages);
            let _ = request.sampling.response_format.as_ref().map(|f| f.labels());
        }
        let _ = serde_json::from_slice::<TokenizeRequest>(bytes);
        let _ = serde_json::from_slice::<DetokenizeRequest>(bytes);
    });
}
