//! Turning checked input rows into a score matrix over one ordered label set, with the gold
//! labels as indices and a count of how each row was read.
//!
//! `probs` rows must name every label with a finite, non-negative number; rows whose sum is more
//! than [`DEFAULT_SUM_TOLERANCE`] from 1 are divided by their sum and counted as `renormalized`.
//! `logits` rows must name every label with a finite number. `text` rows go through the
//! verbalized parser; rows it cannot read are handled by the [`UnparseablePolicy`] and counted.

use super::input::{InputFile, InputKind, InputRow, RowScores};
use crate::error::{bail, invalid, Result};
use candor_calib::verbalized::{ParseStatus, VerbalizedParser, DEFAULT_SUM_TOLERANCE};
use candor_calib::ScoreMatrix;
use std::collections::BTreeMap;

/// What to do with a `text` row whose distribution cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum UnparseablePolicy {
    /// Leave the row out of every metric (the count is reported).
    Exclude,
    /// Use the uniform distribution for the row (the count is reported).
    Uniform,
}

impl UnparseablePolicy {
    /// The policy's name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Exclude => "exclude",
            Self::Uniform => "uniform",
        }
    }
}

/// Whether the matrix holds probabilities or logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreKind {
    /// Rows are distributions.
    Probabilities,
    /// Rows are logits.
    Logits,
}

/// The evaluable data: one row per kept example.
#[derive(Debug, Clone)]
pub struct PreparedInput {
    /// Label names, in column order.
    pub labels: Vec<String>,
    /// Probabilities or logits.
    pub kind: ScoreKind,
    /// The scores of the kept rows.
    pub scores: ScoreMatrix,
    /// Gold label index of each kept row.
    pub gold: Vec<usize>,
    /// How many rows were read with each status (`ok`, `renormalized`, `partial`, `unparseable`).
    pub status_counts: BTreeMap<&'static str, usize>,
    /// Rows left out by [`UnparseablePolicy::Exclude`].
    pub excluded: usize,
    /// Mean `|Σ p − 1|` of the values as written, over rows where a sum existed.
    pub mean_sum_deviation: Option<f64>,
}

/// Builds the score matrix of `input` over `labels`.
pub fn prepare(input: &InputFile, labels: &[String], policy: UnparseablePolicy) -> Result<PreparedInput> {
    let parser = VerbalizedParser::new(labels)?;
    let mut prepared = PreparedInput {
        labels: labels.to_vec(),
        kind: match input.kind {
            InputKind::Logits => ScoreKind::Logits,
            InputKind::Probs | InputKind::Text => ScoreKind::Probabilities,
        },
        scores: ScoreMatrix::new(labels.len(), Vec::new())?,
        gold: Vec::new(),
        status_counts: BTreeMap::new(),
        excluded: 0,
        mean_sum_deviation: None,
    };
    let mut values = Vec::with_capacity(input.rows.len() * labels.len());
    let mut deviations = Vec::new();
    for row in &input.rows {
        let at = |message: String| invalid!("{}:{}: {message}", input.name, row.line);
        let gold = labels
            .iter()
            .position(|l| *l == row.label)
            .ok_or_else(|| at(format!("label '{}' is not one of the labels {labels:?}", row.label)))?;
        let read = read_row(row, labels, &parser).map_err(|e| at(e.to_string()))?;
        *prepared.status_counts.entry(read.status).or_insert(0) += 1;
        deviations.extend(read.sum_deviation);
        match read.values {
            Some(row_values) => values.extend(row_values),
            None if policy == UnparseablePolicy::Uniform => {
                values.extend(std::iter::repeat_n(1.0 / labels.len() as f64, labels.len()))
            }
            None => {
                prepared.excluded += 1;
                continue;
            }
        }
        prepared.gold.push(gold);
    }
    if prepared.gold.is_empty() {
        bail!("{}: no usable rows ({} could not be parsed)", input.name, prepared.excluded);
    }
    prepared.scores = ScoreMatrix::new(labels.len(), values)?;
    if !deviations.is_empty() {
        prepared.mean_sum_deviation = Some(deviations.iter().sum::<f64>() / deviations.len() as f64);
    }
    Ok(prepared)
}

/// One row as read: its values in label order (`None` if unusable), status and raw-sum deviation.
struct ReadRow {
    values: Option<Vec<f64>>,
    status: &'static str,
    sum_deviation: Option<f64>,
}

fn read_row(row: &InputRow, labels: &[String], parser: &VerbalizedParser) -> Result<ReadRow> {
    match &row.scores {
        RowScores::Probs(pairs) => {
            let values = ordered_values(pairs, labels, "probs")?;
            if let Some((label, p)) = labels.iter().zip(&values).find(|(_, p)| !(p.is_finite() && **p >= 0.0)) {
                bail!("probs[{label:?}] = {p} is not a finite, non-negative probability");
            }
            let sum: f64 = values.iter().sum();
            if sum <= 0.0 {
                bail!("probs sum to 0; expected a distribution");
            }
            let deviation = (sum - 1.0).abs();
            let status = if deviation <= DEFAULT_SUM_TOLERANCE { "ok" } else { "renormalized" };
            Ok(ReadRow {
                values: Some(values.iter().map(|p| p / sum).collect()),
                status,
                sum_deviation: Some(deviation),
            })
        }
        RowScores::Logits(pairs) => {
            let values = ordered_values(pairs, labels, "logits")?;
            if let Some((label, z)) = labels.iter().zip(&values).find(|(_, z)| !z.is_finite()) {
                bail!("logits[{label:?}] = {z} is not a finite number");
            }
            Ok(ReadRow { values: Some(values), status: "ok", sum_deviation: None })
        }
        RowScores::Text(text) => {
            let parsed = parser.parse(text);
            let status = parsed.status.code();
            let values = match parsed.status {
                ParseStatus::Unparseable { .. } => None,
                _ => parsed.probabilities,
            };
            Ok(ReadRow { values, status, sum_deviation: parsed.raw_sum_deviation })
        }
    }
}

/// The values of `pairs` in `labels` order; every label exactly once, no unknown key.
fn ordered_values(pairs: &[(String, f64)], labels: &[String], field: &str) -> Result<Vec<f64>> {
    let mut values: Vec<Option<f64>> = vec![None; labels.len()];
    for (key, value) in pairs {
        let Some(column) = labels.iter().position(|l| l == key) else {
            bail!("{field} has unknown label '{key}'; the labels are {labels:?}");
        };
        values[column] = Some(*value);
    }
    labels
        .iter()
        .zip(values)
        .map(|(label, value)| value.ok_or_else(|| invalid!("{field} lacks label '{label}'")))
        .collect()
}
