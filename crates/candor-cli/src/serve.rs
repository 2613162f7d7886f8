//! `candor serve`: Candor's exact local engine behind vLLM's HTTP API (`candor-server`), for
//! `candor run --model http://…`, lm-evaluation-harness or any OpenAI client.

use crate::model_args::{LocalModelFlags, DEFAULT_MODEL};
use anyhow::{ensure, Result};
use candor_local::LocalBackend;
use candor_server::{ServeOptions, ServerLimits};
use clap::Args;
use std::path::Path;

/// Arguments of `candor serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Model: a .gguf file, a directory with config.json + *.safetensors + tokenizer.json, or
    /// hf:owner/repo[:file.gguf].
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    #[command(flatten)]
    local: LocalModelFlags,
    /// Address to bind. Anything but a loopback address exposes the model to the network
    /// (no authentication): put a proxy in front.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0: any free port; the bound address is printed).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// The name clients send as `model` [default: the model file's or directory's name].
    #[arg(long, value_name = "NAME")]
    served_model_name: Option<String>,
    /// Requests waiting for the engine before new ones are answered 503 (retry later).
    #[arg(long, default_value_t = ServerLimits::default().queue)]
    queue: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = ServerLimits::default().max_body_bytes)]
    max_request_bytes: usize,
}

/// Runs `candor serve` until interrupted.
pub fn run(args: &ServeArgs) -> Result<()> {
    ensure!(args.queue > 0, "--queue must be at least 1");
    let model = args.local.options(&args.model);
    let backend = LocalBackend::new(model.load()?, &model)?;
    let model_name = args.served_model_name.clone().unwrap_or_else(|| default_name(&args.model));
    let options = ServeOptions {
        host: args.host.clone(),
        port: args.port,
        model_name: model_name.clone(),
        limits: ServerLimits { queue: args.queue, max_body_bytes: args.max_request_bytes, ..ServerLimits::default() },
    };
    candor_server::serve(backend, &options, |address| {
        eprintln!("candor serve: {model_name} listening on http://{address}/v1");
    })?;
    Ok(())
}

/// The model's name as clients see it: the file's stem or the directory's name.
fn default_name(spec: &str) -> String {
    let path = Path::new(spec.rsplit(':').next().unwrap_or(spec));
    path.file_stem().map_or_else(|| spec.to_string(), |stem| stem.to_string_lossy().into_owned())
}
