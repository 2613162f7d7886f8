//! `candor generate`: free greedy generation, or constrained verbalized generation of a
//! probability dict over given labels (skeleton forced, numbers generated under a grammar).

use anyhow::{ensure, Result};
use candor_infer::ConstrainedOptions;
use clap::Args;
use serde_json::json;

use crate::model_args::ModelArgs;

/// Arguments of `candor generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Most tokens to generate (free generation).
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Comma-separated labels: write `{"A": p, "B": p, ...}` with the skeleton forced and only
    /// the numbers generated.
    #[arg(long, value_delimiter = ',')]
    constrained_labels: Option<Vec<String>>,
    /// Most digits after the decimal point in constrained numbers.
    #[arg(long, default_value_t = 3)]
    max_fraction_digits: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Run `candor generate`.
pub fn run(args: &GenerateArgs) -> Result<()> {
    let model = args.model.load()?;
    let prompt = args.model.prompt_text(&model, &args.prompt)?;
    let prefix = model.prefill_text(&prompt)?;
    if let Some(labels) = &args.constrained_labels {
        ensure!(
            labels.iter().all(|l| !l.is_empty()),
            "--constrained-labels contains an empty label"
        );
        let options = ConstrainedOptions {
            max_fraction_digits: args.max_fraction_digits,
            ..ConstrainedOptions::default()
        };
        let out = model.generate_constrained(&prefix, labels, &options)?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({ "model": model.source(), "prompt": prompt, "constrained": out })
                )?
            );
            return Ok(());
        }
        println!("{}", out.text);
        for n in &out.numbers {
            println!(
                "  {:<24} {:>8}  log p {:>10.5}  masked log p {:>10.5}",
                n.label, n.text, n.log_prob, n.masked_log_prob
            );
        }
        return Ok(());
    }
    let out = model.generate(&prefix, args.max_tokens)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "model": model.source(), "prompt": prompt, "generation": out })
            )?
        );
        return Ok(());
    }
    println!("{}", out.text);
    let total: f64 = out.token_log_probs.iter().sum();
    eprintln!(
        "[{} tokens, stop: {:?}, total log p {:.4}]",
        out.token_ids.len(),
        out.stop_reason,
        total
    );
    Ok(())
}
