//! `candor eval`: flags → the eval pipeline of `candor_experiment::eval`, printed as a table or
//! one JSON document.

use crate::analysis_args::AnalysisFlags;
use anyhow::Result;
use candor_experiment::eval::{evaluate, EvalConfig, UnparseablePolicy};
use candor_experiment::run::Signal;
use std::path::PathBuf;

/// Arguments of `candor eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// JSONL file: one `{"label": L, "probs"|"logits"|"text": ...}` object per line.
    #[arg(long, required_unless_present = "run", conflicts_with = "run")]
    input: Option<PathBuf>,
    /// A `candor run` directory to read instead of `--input` (labels from its manifest).
    #[arg(long, requires = "signal")]
    run: Option<PathBuf>,
    /// Which signal of `--run` to evaluate.
    #[arg(long, value_enum, requires = "run")]
    signal: Option<Signal>,
    /// The label set, in order (default: the sorted labels seen in the file).
    #[arg(long, value_delimiter = ',', conflicts_with = "run")]
    labels: Option<Vec<String>>,
    /// Fraction of each class used to fit calibrators, in [0, 1); 0 evaluates the input as is.
    #[arg(long, default_value_t = 0.5)]
    calib_fraction: f64,
    /// Seed, bootstrap, ε, temperature bounds, selections, interval method, ε sweep.
    #[command(flatten)]
    analysis: AnalysisFlags,
    /// What to do with `text` rows whose distribution cannot be parsed: count them as uniform
    /// (the signal failed there, and its metrics should show it; as `candor calibrate`), or
    /// leave them out (the count is reported).
    #[arg(long, value_enum, default_value_t = UnparseablePolicy::Uniform)]
    unparseable: UnparseablePolicy,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

impl EvalArgs {
    /// The pipeline's configuration these flags describe.
    pub fn config(&self) -> EvalConfig {
        EvalConfig {
            input: self.input.clone(),
            run: self.run.clone(),
            signal: self.signal,
            labels: self.labels.clone(),
            calib_fraction: self.calib_fraction,
            analysis: self.analysis.config(),
            unparseable: self.unparseable,
        }
    }
}

/// Runs `candor eval`.
pub fn run(args: &EvalArgs) -> Result<()> {
    let report = evaluate(&args.config())?;
    let out = match args.json {
        true => serde_json::to_string_pretty(&candor_experiment::eval::json(&report))? + "\n",
        false => candor_experiment::eval::table(&report),
    };
    print!("{out}");
    Ok(())
}
