//! Reading one signal of a `candor run` directory as `candor eval` input: the verbalized answers
//! (re-parsed from the model's raw text) or the label log-probabilities (used as logits, whose
//! softmax is the distribution restricted to the label set). The label set and its order come
//! from the run's manifest.

use super::input::{InputFile, InputKind, InputRow, RowScores};
use crate::run::manifest::Manifest;
use crate::run::predictions::{complete_lines, Record, PREDICTIONS_FILE};
use crate::run::Signal;
use crate::error::{bail, Context, Result};
use std::path::Path;

/// The rows of `signal` in run directory `dir`, and the run's labels.
pub fn read_run(dir: &Path, signal: Signal) -> Result<(InputFile, Vec<String>)> {
    let manifest = Manifest::read(dir)?;
    let path = dir.join(PREDICTIONS_FILE);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.display().to_string();
    let mut rows = Vec::new();
    for (index, line) in complete_lines(&bytes).enumerate() {
        let line_no = index + 1;
        let record: Record = serde_json::from_slice(line)
            .with_context(|| format!("{name}:{line_no}: not a Candor record"))?;
        let scores = match signal {
            Signal::Verbalized => record.verbalized.map(|v| RowScores::Text(v.raw_text)),
            Signal::Logits => record.logits.map(|l| {
                RowScores::Logits(manifest.dataset.labels.iter().cloned().zip(l.log_probs).collect())
            }),
        };
        let Some(scores) = scores else {
            bail!("{name}:{line_no}: the run did not collect the {signal:?} signal (see --signals of candor run)");
        };
        rows.push(InputRow { line: line_no, label: record.gold, scores });
    }
    if rows.is_empty() {
        bail!("{name}: no records yet");
    }
    let kind = match signal {
        Signal::Verbalized => InputKind::Text,
        Signal::Logits => InputKind::Logits,
    };
    Ok((InputFile { name, kind, rows }, manifest.dataset.labels))
}
