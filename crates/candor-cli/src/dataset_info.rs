//! `candor dataset-info`: loads a dataset exactly as `candor run` will and describes it: where it
//! came from, how many rows per label (in the split and selected), a few example ids, the label
//! descriptions, and optionally how many texts a word budget would truncate.

use crate::dataset_args::DatasetArgs;
use candor_data::truncate::fit_to_budget;
use candor_data::{Dataset, Origin};
use anyhow::{Context, Result};
use serde::Serialize;

/// Arguments of `candor dataset-info`.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct InfoArgs {
    #[command(flatten)]
    dataset: DatasetArgs,
    /// Also count the texts longer than N whitespace-separated words, which a budget of N words
    /// would truncate.
    #[arg(long, value_name = "N")]
    max_words: Option<usize>,
    /// How many example ids to show (the first ones in file order).
    #[arg(long, value_name = "N", default_value_t = 5)]
    show_ids: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Row counts of one label.
#[derive(Debug, Serialize)]
struct LabelSummary<'a> {
    name: &'a str,
    description: Option<&'a str>,
    rows: usize,
    rows_in_split: usize,
}

/// How many selected texts exceed a word budget.
#[derive(Debug, Serialize)]
struct TruncationSummary {
    max_words: usize,
    truncated: usize,
}

/// Everything `dataset-info` reports.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    name: &'a str,
    split: &'a str,
    task: Option<&'a str>,
    origin: &'a Origin,
    rows_in_split: usize,
    rows: usize,
    limit: Option<usize>,
    seed: u64,
    labels: Vec<LabelSummary<'a>>,
    first_ids: Vec<&'a str>,
    truncation: Option<TruncationSummary>,
}

/// Runs `candor dataset-info`.
pub fn run_info(args: &InfoArgs) -> Result<()> {
    let dataset = args.dataset.request().load()?;
    let truncation = args
        .max_words
        .map(|max_words| count_truncated(&dataset, max_words))
        .transpose()?;
    let summary = summarize(&dataset, args.show_ids, truncation);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).context("cannot write JSON")?
        );
    } else {
        print!("{}", render_text(&summary));
    }
    Ok(())
}

fn count_truncated(dataset: &Dataset, max_words: usize) -> Result<TruncationSummary> {
    let words = |text: &str| text.split_whitespace().count();
    let mut truncated = 0;
    for example in &dataset.examples {
        if fit_to_budget(&example.text, max_words, words)?.truncated {
            truncated += 1;
        }
    }
    Ok(TruncationSummary {
        max_words,
        truncated,
    })
}

fn summarize(
    dataset: &Dataset,
    show_ids: usize,
    truncation: Option<TruncationSummary>,
) -> Summary<'_> {
    let labels = dataset
        .labels
        .iter()
        .zip(dataset.label_counts())
        .zip(&dataset.counts_in_split)
        .map(|((label, rows), &rows_in_split)| LabelSummary {
            name: &label.name,
            description: label.description.as_deref(),
            rows,
            rows_in_split,
        })
        .collect();
    Summary {
        name: &dataset.name,
        split: &dataset.split,
        task: dataset.task.as_deref(),
        origin: &dataset.origin,
        rows_in_split: dataset.rows_in_split,
        rows: dataset.examples.len(),
        limit: dataset.limit,
        seed: dataset.seed,
        labels,
        first_ids: dataset
            .examples
            .iter()
            .take(show_ids)
            .map(|e| e.id.as_str())
            .collect(),
        truncation,
    }
}

fn describe_origin(origin: &Origin) -> String {
    match origin {
        Origin::File { path } => format!("{} (file)", path.display()),
        Origin::DataDir { path } => format!("{} (--data-dir)", path.display()),
        Origin::Hub { repo, file, path } => format!("hub {repo}/{file} ({})", path.display()),
    }
}

fn render_text(summary: &Summary<'_>) -> String {
    let mut out = format!("dataset  {} (split {})\n", summary.name, summary.split);
    out += &format!("source   {}\n", describe_origin(summary.origin));
    if let Some(task) = summary.task {
        out += &format!("task     {task}\n");
    }
    let selection = if summary.rows < summary.rows_in_split {
        format!("stratified sample, seed {}", summary.seed)
    } else {
        "all rows".to_string()
    };
    out += &format!(
        "rows     {} of {} ({selection})\n",
        summary.rows, summary.rows_in_split
    );
    out += &format!(
        "labels   {} (rows selected / in split)\n",
        summary.labels.len()
    );
    let width = summary
        .labels
        .iter()
        .map(|label| label.name.len())
        .max()
        .unwrap_or(0);
    for label in &summary.labels {
        let line = format!(
            "  {:<width$}  {:>6} / {:<6}",
            label.name, label.rows, label.rows_in_split
        );
        out += match label.description {
            Some(description) => format!("{line}  {description}\n"),
            None => format!("{}\n", line.trim_end()),
        }
        .as_str();
    }
    if !summary.first_ids.is_empty() {
        let more = if summary.rows > summary.first_ids.len() {
            ", …"
        } else {
            ""
        };
        out += &format!("ids      {}{more}\n", summary.first_ids.join(", "));
    }
    if let Some(truncation) = &summary.truncation {
        out += &format!(
            "longer than {} words: {} of {} texts\n",
            truncation.max_words, truncation.truncated, summary.rows
        );
    }
    out
}
