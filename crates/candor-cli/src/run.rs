//! `candor run`: the command-line face of the run engine (`candor_experiment::run`): flags →
//! [`RunSettings`], the local model behind the backend seam, a progress bar, the closing line.
//! `candor merge` joins `--shard` directories.

use crate::dataset_args::DatasetArgs;
use crate::model_args::{LocalModelFlags, DEFAULT_MODEL};
use crate::progress::ProgressBarReporter;
use anyhow::{ensure, Result};
use candor_backend::ModelBackend;
use candor_experiment::run::prompts::DEFAULT_LABEL_ANSWER_PREFIX;
use candor_experiment::run::{Elicitation, PromptFormat, RunPlan, RunSettings, Shard, Signal, VerbalizedMode};
use candor_local::{LocalBackend, LocalModelOptions};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;
use candor_served::{is_server_url, RequestPolicy, ServedBackend, ServedOptions};


/// Arguments of `candor run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Model: a .gguf file, a directory with config.json + *.safetensors + tokenizer.json,
    /// hf:owner/repo[:file.gguf], or a server's URL http(s)://HOST:PORT[/v1] (vLLM, or
    /// `candor serve`).
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    #[command(flatten)]
    served: ServedArgs,
    #[command(flatten)]
    local: LocalModelFlags,
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// The run directory (created; re-running the same command resumes it).
    #[arg(long, value_name = "DIR", required_unless_present = "print_prompts")]
    pub out: Option<PathBuf>,
    /// Print each example's prompts exactly as the model would receive them (one JSON line per
    /// example: id, gold, verbalized, label, label_continuations) instead of running it; for
    /// checking the prompts or sending the same ones to another engine. Writes nothing.
    #[arg(long)]
    print_prompts: bool,
    /// Signals to collect, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "verbalized,logits"
    )]
    signals: Vec<Signal>,
    /// How the prompt templates reach the model: as the user's turn of the model's chat
    /// template, or raw (base models) [default: chat when the model has a chat template].
    #[arg(long, value_enum)]
    prompt_format: Option<PromptFormat>,
    /// How the verbalized distribution is produced: constrained (the dict's keys forced, only
    /// the numbers generated) or free (generated, then parsed).
    #[arg(long, value_enum, default_value_t = VerbalizedMode::Constrained)]
    verbalized: VerbalizedMode,
    /// How the verbalized distribution is asked for, comma-separated; each variant is its own
    /// signal: distribution (`verbalized`), top1 (`verbalized_top1`: the most likely label and
    /// its confidence), percent (`verbalized_percent`: percentages from 0
    /// to 100), permuted (`verbalized_permuted`: labels in a seeded
    /// per-example order), kshot (`verbalized_kshot`: --kshot demonstrations from --kshot-split
    /// first), sampled (`verbalized_sampled`: --samples answers at --sample-temperature,
    /// seeded with --seed, averaged).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "distribution")]
    elicitation: Vec<Elicitation>,
    /// Demonstrations of the kshot elicitation.
    #[arg(long, value_name = "K", default_value_t = 3)]
    kshot: usize,
    /// The split of the same dataset the kshot demonstrations are drawn from (with --seed;
    /// required with --elicitation kshot).
    #[arg(long, value_name = "SPLIT")]
    kshot_split: Option<String>,
    /// Answers sampled per example by the sampled elicitation.
    #[arg(long, value_name = "N", default_value_t = 5)]
    samples: usize,
    /// Temperature of the sampled elicitation's answers.
    #[arg(long, value_name = "TAU", default_value_t = 0.7)]
    sample_temperature: f64,
    /// Most tokens of free verbalized generation.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Most digits after the decimal point in constrained numbers.
    #[arg(long, default_value_t = 3)]
    max_fraction_digits: usize,
    /// Most prompt tokens; longer texts are truncated to fit [default: the context window minus
    /// the room the signals need after the prompt].
    #[arg(long, value_name = "N")]
    max_prompt_tokens: Option<usize>,
    /// Verbalized prompt template file (placeholders {text}, {labels}, {label_descriptions},
    /// {task}; {{ and }} for literal braces) [default: the built-in elicitation].
    #[arg(long, value_name = "FILE")]
    verbalized_prompt: Option<PathBuf>,
    /// Label prompt template file, same placeholders [default: the built-in label prompt].
    #[arg(long, value_name = "FILE")]
    label_prompt: Option<PathBuf>,
    /// Text the assistant's answer is made to start with before the labels are scored (each
    /// label gets a leading space after a prefix that ends in a non-space). Without it a small
    /// model puts most of its first-token mass on preambles; "" scores at the answer's start.
    #[arg(long, value_name = "TEXT", default_value = DEFAULT_LABEL_ANSWER_PREFIX)]
    label_answer_prefix: String,
    /// Run only shard I of N: the examples whose position (after --limit sampling) is I mod N.
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
    /// Examples in flight at once: their constrained verbalized dicts advance together, one
    /// batched forward per step (the records are the same for any value; 1 runs one example
    /// after another) [default: as many as fit a quarter of the available memory, at most 8].
    #[arg(long, value_name = "N")]
    batch: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

impl RunArgs {
    /// The run settings these flags describe.
    pub fn settings(&self) -> RunSettings {
        RunSettings {
            dataset: self.dataset.request(),
            out: self.out.clone().unwrap_or_default(),
            signals: self.signals.clone(),
            verbalized: self.verbalized,
            elicitation: self.elicitation.clone(),
            kshot: self.kshot,
            kshot_split: self.kshot_split.clone(),
            samples: self.samples,
            sample_temperature: self.sample_temperature,
            max_tokens: self.max_tokens,
            max_fraction_digits: self.max_fraction_digits,
            max_prompt_tokens: self.max_prompt_tokens,
            verbalized_prompt: self.verbalized_prompt.clone(),
            label_prompt: self.label_prompt.clone(),
            label_answer_prefix: self.label_answer_prefix.clone(),
            shard: self.shard,
            batch: self.batch,
            prompt_format: self.prompt_format,
        }
    }

    /// Which local model to load.
    pub fn model_options(&self) -> LocalModelOptions {
        self.local.options(&self.model)
    }
}

/// Options of a served model (`--model http://…`).
#[derive(Args, Debug, Clone)]
pub struct ServedArgs {
    /// The model name the server knows (default: its only model).
    #[arg(long, value_name = "NAME")]
    served_model: Option<String>,
    /// The server's API: auto (ask the server), vllm, sglang or llama-server.
    #[arg(long, default_value = "auto")]
    api: String,
    /// Requests in flight at once against a server (also the examples in flight).
    #[arg(long, default_value_t = RequestPolicy::default().concurrency)]
    concurrency: usize,
    /// Further attempts of a request after a connection error, timeout, 429 or 5xx.
    #[arg(long, default_value_t = RequestPolicy::default().retries)]
    retries: u32,
    /// Seconds one request attempt may take.
    #[arg(long, value_name = "SECONDS", default_value_t = RequestPolicy::default().timeout.as_secs())]
    request_timeout: u64,
}

impl ServedArgs {
    /// The served backend's options for the server at `url`.
    pub fn options(&self, url: &str) -> Result<ServedOptions> {
        ensure!(self.concurrency > 0, "--concurrency must be at least 1");
        Ok(ServedOptions {
            url: url.to_string(),
            model: self.served_model.clone(),
            api: self.api.parse()?,
            policy: RequestPolicy {
                concurrency: self.concurrency,
                retries: self.retries,
                timeout: Duration::from_secs(self.request_timeout.max(1)),
                ..RequestPolicy::default()
            },
        })
    }
}

/// Runs `candor run` (or prints its prompts) on a local or served model.
pub fn run(args: &RunArgs) -> Result<()> {
    if is_server_url(&args.model) {
        let backend = ServedBackend::connect(&args.served.options(&args.model)?)?;
        let result = match args.print_prompts {
            true => print_prompts(args.settings(), &backend),
            false => execute(args.settings(), &backend, args.quiet),
        };
        eprintln!("{}: {}", args.model, backend.request_summary());
        return result;
    }
    let model = args.model_options();
    let backend = LocalBackend::new(model.load()?, &model)?;
    match args.print_prompts {
        true => print_prompts(args.settings(), &backend),
        false => execute(args.settings(), &backend, args.quiet),
    }
}

/// Prints the prompts of every example of `settings` as JSON lines.
fn print_prompts<B: ModelBackend>(settings: RunSettings, backend: &B) -> Result<()> {
    let plan = RunPlan::new(settings)?;
    let mut out = std::io::stdout().lock();
    for prompts in plan.prompts(backend)? {
        writeln!(out, "{}", serde_json::to_string(&prompts)?)?;
    }
    Ok(())
}

/// Plans `settings` (templates, dataset), loads the local model of `model`, executes the run and
/// prints where the records are.
pub fn run_local(settings: RunSettings, model: &LocalModelOptions, quiet: bool) -> Result<()> {
    let backend = LocalBackend::new(model.load()?, model)?;
    execute(settings, &backend, quiet)
}

/// Plans `settings` (templates, dataset), executes the run on `backend` and prints where the
/// records are.
fn execute<B: ModelBackend>(settings: RunSettings, backend: &B, quiet: bool) -> Result<()> {
    let plan = RunPlan::new(settings.clone())?;
    let outcome = plan.execute(backend, &mut ProgressBarReporter::new(quiet))?;
    eprintln!(
        "{}: {} examples ({} new, {} truncated{}) in {}",
        settings.out.display(),
        outcome.examples,
        outcome.new_records,
        outcome.truncated,
        match outcome.repaired_torn_line {
            true => ", 1 torn last line dropped and recomputed",
            false => "",
        },
        outcome.predictions.display()
    );
    Ok(())
}

/// Arguments of `candor merge`.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The merged run directory (must not exist yet).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The shard directories, in any order.
    #[arg(required = true, value_name = "SHARD_DIR")]
    shards: Vec<PathBuf>,
}

/// Runs `candor merge`.
pub fn run_merge(args: &MergeArgs) -> Result<()> {
    let examples = candor_experiment::run::merge(&args.out, &args.shards)?;
    eprintln!("{}: merged {examples} examples from {} shards", args.out.display(), args.shards.len());
    Ok(())
}
