//! The served backend's HTTP client against a scripted server on a local socket: 5xx answers
//! are retried with backoff and counted, a server that keeps failing is an error naming the URL,
//! the attempts and the last answer, a body that is not JSON and a refused request (4xx) are
//! errors at once, naming what came back.

use candor_served::http::{HttpClient, RequestPolicy};
use candor_served::ServedError;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

/// Serves `answers` (status, body) in order, one per connection, then stops.
fn scripted_server(answers: Vec<(u16, &'static str)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for (status, body) in answers {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut request_body = vec![0; length];
            reader.read_exact(&mut request_body).unwrap();
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(reply.as_bytes()).unwrap();
        }
    });
    base
}

fn policy(retries: u32) -> RequestPolicy {
    RequestPolicy { concurrency: 1, retries, timeout: Duration::from_secs(5), first_backoff: Duration::from_millis(10) }
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

#[test]
fn server_errors_are_retried_and_counted() {
    let base = scripted_server(vec![(500, r#"{"error": {"message": "busy"}}"#), (503, "{}"), (200, r#"{"ok": 1}"#)]);
    let client = HttpClient::new(&base, policy(2)).unwrap();
    let answer = block_on(client.post("/v1/completions", &serde_json::json!({}))).unwrap();
    assert_eq!(answer["ok"], 1);
    let summary = client.log.summary();
    assert_eq!((summary.requests, summary.retries, summary.failures), (1, 2, 0));
}

#[test]
fn a_server_that_keeps_failing_is_an_error_naming_the_url_and_the_last_answer() {
    let base = scripted_server(vec![(500, r#"{"error": {"message": "CUDA out of memory"}}"#); 2]);
    let client = HttpClient::new(&base, policy(1)).unwrap();
    let error = block_on(client.post("/v1/completions", &serde_json::json!({}))).unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, ServedError::Unavailable { attempts: 2, .. }), "{text}");
    assert!(text.contains(&format!("{base}/v1/completions")) && text.contains("CUDA out of memory"), "{text}");
    assert_eq!(client.log.summary().failures, 1);
}

#[test]
fn a_body_that_is_not_json_is_an_error_at_once() {
    let base = scripted_server(vec![(200, "<html>proxy login</html>")]);
    let client = HttpClient::new(&base, policy(3)).unwrap();
    let error = block_on(client.get("/v1/models")).unwrap_err();
    assert!(matches!(error, ServedError::Malformed { .. }));
    assert!(error.to_string().contains("proxy login"), "{error}");
    assert_eq!(client.log.summary().retries, 0);
}

#[test]
fn a_refused_request_is_an_error_at_once_with_the_servers_message() {
    let base = scripted_server(vec![(404, r#"{"object": "error", "message": "The model `x` does not exist.", "type": "NotFoundError", "code": 404}"#)]);
    let client = HttpClient::new(&base, policy(3)).unwrap();
    let error = block_on(client.post("/v1/completions", &serde_json::json!({}))).unwrap_err();
    assert!(matches!(error, ServedError::Refused { status: 404, .. }));
    assert!(error.to_string().contains("The model `x` does not exist."), "{error}");
}
