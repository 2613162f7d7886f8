//! The `candor` command line: calibration experiments on local language models. It only parses
//! arguments, turns them into the settings of the library crates (`candor-data`,
//! `candor-experiment`, `candor-local`, `candor-report`), shows progress and maps errors to exit
//! codes; the work itself happens in those crates.

mod analysis_args;
mod calibrate;
mod dataset_args;
mod dataset_info;
mod demo;
mod eval;
mod export;
mod generate;
mod model_args;
mod progress;
mod run;
mod score;
mod serve;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Is this model right 80% of the time when it says it is 80% sure?
#[derive(Parser)]
#[command(name = "candor", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
enum Command {
    /// The whole experiment on Candor's demo dataset: run both signals, calibrate, write
    /// report.md and report.html (a few minutes on a laptop CPU).
    Demo(demo::DemoArgs),
    /// Load a dataset as `candor run` would and show its rows per label, ids and label descriptions.
    DatasetInfo(dataset_info::InfoArgs),
    /// Calibrate and measure probabilities, logits or verbalized answers from a JSONL file (no model needed).
    Eval(eval::EvalArgs),
    /// Exact log-probability of each label as the continuation of a prompt (local model).
    Score(score::ScoreArgs),
    /// Greedy generation, or a constrained probability dict over labels (local model).
    Generate(generate::GenerateArgs),
    /// Run a local model over a dataset: verbalized distributions and label log-probs per example
    /// into a resumable run directory (manifest.json + predictions.jsonl).
    Run(Box<run::RunArgs>),
    /// Fit the calibrators on part of a run's records and measure every signal it collected on the rest
    /// (writes calibration.json in the run directory).
    Calibrate(calibrate::CalibrateArgs),
    /// Join the directories of a `run --shard I/N` run into one run directory, in dataset order.
    Merge(run::MergeArgs),
    /// Render a calibrated run as Markdown, JSON or a self-contained HTML page with reliability diagrams.
    Report(calibrate::ReportArgs),
    /// One Markdown table across calibrated runs: parse rate, accuracy, ECE/Brier/NLL before and
    /// after invert-softmax TS and re-softmax TS, per signal.
    Summarize(calibrate::SummarizeArgs),
    /// Serve a local model's exact probabilities over vLLM's HTTP API (completions with prompt
    /// log-probs, chat completions, tokenize) for `run --model http://…` or other tools.
    Serve(serve::ServeArgs),
    /// Write a model's dequantized f32 weights as a safetensors directory (development).
    #[command(hide = true)]
    ExportDense(export::ExportArgs),
}

/// Exit codes: 0 success, 1 any error (the message says what and where), 2 bad command-line usage.
fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Demo(args) => demo::run(args),
        Command::DatasetInfo(args) => dataset_info::run_info(args),
        Command::Eval(args) => eval::run(args),
        Command::Score(args) => score::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Run(args) => run::run(args),
        Command::Merge(args) => run::run_merge(args),
        Command::Report(args) => calibrate::run_report(args),
        Command::Calibrate(args) => calibrate::run(args),
        Command::Summarize(args) => calibrate::run_summarize(args),
        Command::Serve(args) => serve::run(args),
        Command::ExportDense(args) => export::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
