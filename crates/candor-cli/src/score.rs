//! `candor score`: the exact log-probability of each label string as the continuation of a
//! prompt, the first-token variant, and the probability mass outside the labels' first tokens.

use anyhow::{ensure, Result};
use candor_infer::LabelScores;
use clap::Args;
use serde::Serialize;

use crate::model_args::ModelArgs;
use candor_experiment::run::label_continuations;

/// Arguments of `candor score`.
#[derive(Args, Debug)]
pub struct ScoreArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt; the labels are scored as the text that directly follows it.
    #[arg(long)]
    prompt: String,
    /// Text appended after the (chat-rendered) prompt, where the answer starts; each label is then
    /// scored with a leading space when the prefix ends in a non-space, as `candor run
    /// --label-answer-prefix` does (default: none, labels follow the prompt directly).
    #[arg(long, value_name = "TEXT", default_value = "")]
    answer_prefix: String,
    /// Comma-separated labels, e.g. positive,negative.
    #[arg(long, value_delimiter = ',', required = true)]
    labels: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct ScoreReport<'a> {
    model: &'a str,
    prompt: &'a str,
    prompt_tokens: usize,
    /// Softmax of the label log-probs: the distribution restricted to the labels.
    normalized: Vec<f64>,
    #[serde(flatten)]
    scores: &'a LabelScores,
}

/// Softmax over the labels' total log-probabilities.
fn normalize(log_probs: &[f64]) -> Vec<f64> {
    let max = log_probs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = log_probs.iter().map(|lp| (lp - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// Run `candor score`.
pub fn run(args: &ScoreArgs) -> Result<()> {
    ensure!(
        args.labels.iter().all(|l| !l.is_empty()),
        "--labels contains an empty label"
    );
    let model = args.model.load()?;
    let prompt = args.model.prompt_text(&model, &args.prompt)? + &args.answer_prefix;
    let prefix = model.prefill_text(&prompt)?;
    let continuations = label_continuations(&args.labels, &args.answer_prefix);
    let scores = model.score_labels(&prefix, &continuations)?;
    let totals: Vec<f64> = scores.labels.iter().map(|s| s.log_prob).collect();
    let report = ScoreReport {
        model: model.source(),
        prompt: &prompt,
        prompt_tokens: prefix.tokens().len(),
        normalized: normalize(&totals),
        scores: &scores,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "model: {}  (prompt: {} tokens)",
        report.model, report.prompt_tokens
    );
    println!(
        "{:<24} {:>8} {:>12} {:>10} {:>14} {:>7}",
        "label", "tokens", "log p", "p", "first log p", "share"
    );
    for (score, share) in scores.labels.iter().zip(&report.normalized) {
        println!(
            "{:<24} {:>8} {:>12.5} {:>10.5} {:>14.5} {:>7.4}",
            score.label,
            score.token_ids.len(),
            score.log_prob,
            score.log_prob.exp(),
            score.first_token_log_prob,
            share
        );
    }
    println!(
        "probability of a first token outside the labels: {:.5}",
        scores.first_token_mass_outside
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_is_a_softmax() {
        let p = normalize(&[0.25f64.ln(), 0.5f64.ln()]);
        assert!((p[0] - 1.0 / 3.0).abs() < 1e-12 && (p[1] - 2.0 / 3.0).abs() < 1e-12);
    }
}
