//! Reading a run directory's records into per-example signal rows for calibration: the gold
//! label, the verbalized distribution of every elicitation variant as the run parsed it (with
//! its status; each variant is its own signal: `verbalized`, `verbalized_permuted`, ...), and
//! the label log-probabilities (used as logits: their softmax is the distribution restricted to
//! the labels).
//!
//! A calibration run (`--calibration-run`) must come from the same model weights, prompts,
//! settings and labels as the run it calibrates; only the dataset split and sample may differ.

use crate::run::manifest::{differing_fields, Manifest};
use crate::run::predictions::{complete_lines, Record, PREDICTIONS_FILE};
use crate::run::Elicitation;
use candor_calib::calibrators::InputKind;
use std::collections::BTreeMap;
use crate::error::{bail, Context, Result};
use candor_calib::verbalized::ParseStatus;
use std::path::Path;

/// The records of one run directory, column-wise.
pub struct RunRecords {
    /// The run's manifest.
    pub manifest: Manifest,
    /// Example ids, in record order.
    pub ids: Vec<String>,
    /// Gold label index per example.
    pub gold: Vec<usize>,
    /// The verbalized answers of each elicitation variant collected.
    pub verbalized: BTreeMap<Elicitation, Vec<VerbalizedRow>>,
    /// The label log-probabilities per example, when collected.
    pub logits: Option<Vec<LogitsRow>>,
    /// Examples whose text was truncated.
    pub truncated: usize,
    /// Sum of per-example wall-clock times, in seconds.
    pub model_seconds: f64,
}

/// A signal of a run's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordedSignal {
    /// The verbalized answers of one elicitation variant.
    Verbalized(Elicitation),
    /// The label log-probabilities.
    Logits,
}

impl RecordedSignal {
    /// The signal's name in records and calibration results.
    pub fn name(self) -> &'static str {
        match self {
            Self::Verbalized(variant) => variant.signal_name(),
            Self::Logits => "logits",
        }
    }

    /// What calibrators read: probabilities (verbalized) or logits.
    pub fn input_kind(self) -> InputKind {
        match self {
            Self::Verbalized(_) => InputKind::Probabilities,
            Self::Logits => InputKind::Logits,
        }
    }
}

/// One verbalized answer as the run read it.
pub struct VerbalizedRow {
    /// The distribution (`None` when unparseable).
    pub probabilities: Option<Vec<f64>>,
    /// The parse status.
    pub status: ParseStatus,
    /// `|Σ raw − 1|` when a sum existed.
    pub raw_sum_deviation: Option<f64>,
}

/// One example's label scores.
pub struct LogitsRow {
    /// Total log-probability of each label's continuation.
    pub log_probs: Vec<f64>,
    /// Probability of a first token that starts no label.
    pub outside_mass: f64,
}

impl RunRecords {
    /// Reads `dir`'s manifest and every complete record (at least one). An unfinished run is
    /// accepted: its complete records are what there is to calibrate, and the caller says so.
    pub fn read(dir: &Path) -> Result<Self> {
        let manifest = Manifest::read(dir)?;
        let path = dir.join(PREDICTIONS_FILE);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let n_labels = manifest.dataset.labels.len();
        let wants = |signal: &str| manifest.settings.signals.iter().any(|s| s == signal);
        let mut verbalized = BTreeMap::new();
        if wants("verbalized") {
            for name in &manifest.settings.elicitation.variants {
                let Some(variant) = Elicitation::from_name(name) else {
                    bail!("{}: settings.elicitation.variants has '{name}', not an elicitation this candor knows", dir.display());
                };
                verbalized.insert(variant, Vec::new());
            }
        }
        let mut records = Self {
            verbalized,
            logits: wants("logits").then(Vec::new),
            manifest: manifest.clone(),
            ids: Vec::new(),
            gold: Vec::new(),
            truncated: 0,
            model_seconds: 0.0,
        };
        for (index, line) in complete_lines(&bytes).enumerate() {
            let at = format!("{}:{}", path.display(), index + 1);
            let record: Record = serde_json::from_slice(line).with_context(|| format!("{at}: not a Candor record"))?;
            records.push(record, n_labels).with_context(|| at.clone())?;
        }
        if records.ids.is_empty() {
            bail!("{}: no complete records yet (run `candor run` first)", path.display());
        }
        Ok(records)
    }

    fn push(&mut self, record: Record, n_labels: usize) -> Result<()> {
        if record.gold_index >= n_labels {
            bail!("gold_index {} is outside the {n_labels} labels of the manifest", record.gold_index);
        }
        for (&variant, rows) in &mut self.verbalized {
            let Some(v) = record.verbalized_of(variant) else {
                bail!("the record has no {} signal, but the manifest says it was collected", variant.signal_name());
            };
            rows.push(VerbalizedRow {
                probabilities: v.parsed.probabilities.clone().filter(|p| p.len() == n_labels),
                status: v.parsed.status.clone(),
                raw_sum_deviation: v.parsed.raw_sum_deviation,
            });
        }
        match (&mut self.logits, record.logits) {
            (Some(rows), Some(l)) => {
                if l.log_probs.len() != n_labels || l.log_probs.iter().any(|z| !z.is_finite()) {
                    bail!("log_probs must be {n_labels} finite numbers, one per label");
                }
                rows.push(LogitsRow { log_probs: l.log_probs, outside_mass: l.outside_mass });
            }
            (Some(_), None) => bail!("the record has no logits signal, but the manifest says it was collected"),
            (None, _) => {}
        }
        self.ids.push(record.id);
        self.gold.push(record.gold_index);
        self.truncated += usize::from(record.truncated);
        self.model_seconds += record.elapsed_ms as f64 / 1000.0;
        Ok(())
    }

    /// The signals collected: the verbalized variants in canonical order, then the logits.
    pub fn signals(&self) -> Vec<RecordedSignal> {
        let verbalized = self.verbalized.keys().map(|&variant| RecordedSignal::Verbalized(variant));
        verbalized.chain(self.logits.as_ref().map(|_| RecordedSignal::Logits)).collect()
    }

    /// The rows of the verbalized variant `variant`, when collected.
    pub fn verbalized_rows(&self, variant: Elicitation) -> Option<&[VerbalizedRow]> {
        self.verbalized.get(&variant).map(Vec::as_slice)
    }

    /// Examples read.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Checks that `calibration` was made like this run (same model, prompts, settings and
    /// labels); only the dataset split, sample and shard may differ.
    pub fn check_compatible_calibration(&self, calibration: &RunRecords, calibration_dir: &Path) -> Result<()> {
        let may_differ = ["dataset.spec", "dataset.split", "dataset.file", "dataset.rows_in_split", "dataset.limit", "dataset.seed", "dataset.examples"];
        let differing: Vec<String> = differing_fields(&self.manifest, &calibration.manifest, &["candor_version", "created_unix_s", "selection"])?
            .into_iter()
            .filter(|path| !may_differ.iter().any(|field| path == field || path.starts_with(&format!("{field}_"))))
            .collect();
        if !differing.is_empty() {
            bail!(
                "{}: the calibration run was not made like this run; its manifest differs in {}",
                calibration_dir.display(),
                differing.join(", ")
            );
        }
        Ok(())
    }
}
