//! `predictions.jsonl`: one JSON record per example, appended with a single write and a flush so a
//! killed run leaves at most one torn last line. Opening for a resume drops that torn tail
//! (truncating the file after its last newline) and checks that the complete lines are the
//! expected examples in order.
//!
//! Per-label arrays follow the manifest's `dataset.labels` order. Everything except `elapsed_ms`
//! is a deterministic function of the manifest and the example.

use crate::error::{bail, Context, Result};
use candor_calib::VerbalizedDistribution;
use candor_backend::{GeneratedNumber, StopReason};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::elicitation::Elicitation;

/// File name of the records inside a run directory.
pub const PREDICTIONS_FILE: &str = "predictions.jsonl";

/// One example's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position of the example in the sampled dataset (all shards together).
    pub index: usize,
    /// Example id.
    pub id: String,
    /// Gold label name.
    pub gold: String,
    /// Gold label index into the manifest's labels.
    pub gold_index: usize,
    /// Whether the text was truncated to fit the prompt budget.
    pub truncated: bool,
    /// The verbalized signal, when collected.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub verbalized: Option<VerbalizedRecord>,
    /// The `top1` elicitation's answer (signal `verbalized_top1`), when collected.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub verbalized_top1: Option<VerbalizedRecord>,
    /// The `percent` elicitation's answer (signal `verbalized_percent`), when collected.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub verbalized_percent: Option<VerbalizedRecord>,
    /// The `permuted` elicitation's answer (signal `verbalized_permuted`), when collected.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub verbalized_permuted: Option<VerbalizedRecord>,
    /// The `kshot` elicitation's answer (signal `verbalized_kshot`), when collected.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub verbalized_kshot: Option<VerbalizedRecord>,
    /// The `sampled` elicitation's averaged answers (signal `verbalized_sampled`), when
    /// collected.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub verbalized_sampled: Option<VerbalizedRecord>,
    /// The label-logit signal, when collected.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub logits: Option<LogitsRecord>,
    /// Wall-clock time for this example in milliseconds (the only timing field).
    pub elapsed_ms: u64,
    /// Which backend computed it: `local`, or the served engine (`vllm`, `sglang`,
    /// `llama-server`, `candor`).
    #[serde(default = "local_backend")]
    pub backend: String,
}

impl Record {
    /// The answer of elicitation `variant`, when collected.
    pub fn verbalized_of(&self, variant: Elicitation) -> Option<&VerbalizedRecord> {
        match variant {
            Elicitation::Distribution => self.verbalized.as_ref(),
            Elicitation::Top1 => self.verbalized_top1.as_ref(),
            Elicitation::Percent => self.verbalized_percent.as_ref(),
            Elicitation::Permuted => self.verbalized_permuted.as_ref(),
            Elicitation::Kshot => self.verbalized_kshot.as_ref(),
            Elicitation::Sampled => self.verbalized_sampled.as_ref(),
        }
    }

    /// Stores the answer of elicitation `variant`.
    pub fn set_verbalized(&mut self, variant: Elicitation, answer: VerbalizedRecord) {
        let field = match variant {
            Elicitation::Distribution => &mut self.verbalized,
            Elicitation::Top1 => &mut self.verbalized_top1,
            Elicitation::Percent => &mut self.verbalized_percent,
            Elicitation::Permuted => &mut self.verbalized_permuted,
            Elicitation::Kshot => &mut self.verbalized_kshot,
            Elicitation::Sampled => &mut self.verbalized_sampled,
        };
        *field = Some(answer);
    }
}

/// The backend of records written before records named theirs.
fn local_backend() -> String {
    "local".into()
}

/// The verbalized answer of one example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerbalizedRecord {
    /// `free` or `constrained`.
    pub mode: String,
    /// Tokens of the prompt (chat-rendered, before generation).
    pub prompt_tokens: usize,
    /// Whether the dataset's shared prefix was reused for this prompt.
    pub prefix_reused: bool,
    /// The model's text (for constrained mode, the dict with forced skeleton).
    pub raw_text: String,
    /// Tokens the model chose (free: all generated tokens; constrained: the number tokens).
    pub generated_tokens: usize,
    /// Why free generation stopped (`null` in constrained mode).
    pub stop_reason: Option<StopReason>,
    /// The parsed distribution and its status.
    pub parsed: VerbalizedDistribution,
    /// Constrained mode: each generated number with its raw and grammar-masked log-probs.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub numbers: Option<Vec<GeneratedNumber>>,
    /// The `permuted` elicitation: the manifest label indices in the order the prompt listed
    /// them and the dict's keys came (`parsed` is in manifest order all the same).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub permutation: Option<Vec<usize>>,
    /// The constrained `top1` elicitation: the log-probability of each label's dict key
    /// `{"<label>": ` after the prompt (manifest order); the answer's label is their argmax.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_log_probs: Option<Vec<f64>>,
    /// The `sampled` elicitation: every sampled answer (`parsed` is the mean of those that
    /// parsed; `raw_text` is empty).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub samples: Option<Vec<SampledAnswer>>,
    /// The `sampled` elicitation: how many samples could not be parsed (left out of the mean).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unparseable_samples: Option<usize>,
}

/// One sampled answer of the `sampled` elicitation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampledAnswer {
    /// The model's text (constrained: the dict).
    pub raw_text: String,
    /// Tokens the model chose.
    pub generated_tokens: usize,
    /// Its parse.
    pub parsed: VerbalizedDistribution,
}

/// The label scores of one example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogitsRecord {
    /// Tokens of the prompt (chat-rendered, up to the assistant's answer position).
    pub prompt_tokens: usize,
    /// Whether the dataset's shared prefix was reused for this prompt.
    pub prefix_reused: bool,
    /// Total log-probability of each label string (natural log).
    pub log_probs: Vec<f64>,
    /// Log-probability of each label's first token.
    pub first_token_log_probs: Vec<f64>,
    /// Number of tokens of each label.
    pub token_counts: Vec<usize>,
    /// Probability of a first token that starts no label.
    pub outside_mass: f64,
    /// softmax(log_probs): the distribution restricted to the label set.
    pub probabilities: Vec<f64>,
}

/// The fields of a record that identify its example (read when resuming and merging).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RecordKey {
    /// Position in the sampled dataset.
    pub index: usize,
    /// Example id.
    pub id: String,
}

/// An open `predictions.jsonl`, positioned for appending.
#[derive(Debug)]
pub struct PredictionsWriter {
    file: File,
    path: PathBuf,
    repaired_torn_line: bool,
}

impl PredictionsWriter {
    /// Opens (creating if needed) `dir/predictions.jsonl`, drops a torn last line, and checks the
    /// complete lines against `expected` (index, id) in order. Returns the writer and how many
    /// records are already done.
    pub fn open(dir: &Path, expected: &[(usize, &str)]) -> Result<(Self, usize)> {
        let path = dir.join(PREDICTIONS_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // One writer per run directory: two processes appending to one file would duplicate
        // records. The lock goes with the file (and with the process, however it ends).
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "{} is being written by another candor run (wait for it to finish, or use another --out)",
                path.display()
            ),
            Err(std::fs::TryLockError::Error(error)) => {
                return Err(error).with_context(|| format!("locking {}", path.display()))
            }
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .with_context(|| format!("reading {}", path.display()))?;
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        let repaired_torn_line = complete < bytes.len();
        if repaired_torn_line {
            file.set_len(complete as u64)
                .with_context(|| format!("dropping the torn last line of {}", path.display()))?;
        }
        let keys = read_keys(&bytes[..complete], &path)?;
        if keys.len() > expected.len() {
            bail!(
                "{}: {} records, but this run has only {} examples",
                path.display(),
                keys.len(),
                expected.len()
            );
        }
        for (line, (key, &(index, id))) in keys.iter().zip(expected).enumerate() {
            if key.index != index || key.id != id {
                bail!(
                    "{}, line {}: record of example {} ('{}'), expected example {index} ('{id}')",
                    path.display(),
                    line + 1,
                    key.index,
                    key.id
                );
            }
        }
        let done = keys.len();
        Ok((Self { file, path, repaired_torn_line }, done))
    }

    /// Whether opening dropped a torn last line (a run killed while writing it); its example
    /// is computed again.
    pub fn repaired_torn_line(&self) -> bool {
        self.repaired_torn_line
    }

    /// Appends one record as a single write, then flushes it to the file.
    pub fn append(&mut self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .with_context(|| format!("appending to {}", self.path.display()))
    }
}

/// The (index, id) of every line of complete JSONL `bytes`; errors name the file and line.
pub fn read_keys(bytes: &[u8], path: &Path) -> Result<Vec<RecordKey>> {
    complete_lines(bytes)
        .enumerate()
        .map(|(line, text)| {
            serde_json::from_slice(text).with_context(|| {
                format!("{}, line {}: not a Candor record", path.display(), line + 1)
            })
        })
        .collect()
}

/// The newline-terminated lines of `bytes` (without their newline); a torn tail is left out.
pub fn complete_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    bytes[..complete]
        .split(|&b| b == b'\n')
        .take(bytes[..complete].iter().filter(|&&b| b == b'\n').count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(index: usize) -> Record {
        Record {
            backend: "local".into(),
            index,
            id: format!("t-{index}"),
            gold: "a".into(),
            gold_index: 0,
            truncated: false,
            verbalized: None,
            verbalized_top1: None,
            verbalized_percent: None,
            verbalized_permuted: None,
            verbalized_kshot: None,
            verbalized_sampled: None,
            logits: None,
            elapsed_ms: 7,
        }
    }

    #[test]
    fn a_torn_tail_is_dropped_and_complete_lines_are_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let expected = [(0, "t-0"), (2, "t-2"), (4, "t-4")];
        let (mut writer, done) = PredictionsWriter::open(dir.path(), &expected).unwrap();
        assert_eq!(done, 0);
        assert!(!writer.repaired_torn_line());
        writer.append(&record(0)).unwrap();
        drop(writer);
        let path = dir.path().join(PREDICTIONS_FILE);
        let mut torn = std::fs::read(&path).unwrap();
        let intact = torn.len();
        torn.extend_from_slice(br#"{"index":2,"id":"t-"#);
        std::fs::write(&path, &torn).unwrap();
        let (mut writer, done) = PredictionsWriter::open(dir.path(), &expected).unwrap();
        assert_eq!(done, 1);
        assert!(writer.repaired_torn_line());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), intact as u64);
        writer.append(&record(2)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let ids: Vec<&str> = text
            .lines()
            .map(|l| &l[..l.find(",\"gold\"").unwrap()])
            .collect();
        assert_eq!(
            ids,
            [r#"{"index":0,"id":"t-0""#, r#"{"index":2,"id":"t-2""#]
        );
    }

    #[test]
    fn a_second_writer_of_one_run_directory_is_refused() {
        // Found by scripts/soak-kill.sh: two runs appending to one directory duplicated records.
        let dir = tempfile::tempdir().unwrap();
        let (_first, _) = PredictionsWriter::open(dir.path(), &[(0, "t-0")]).unwrap();
        let err = PredictionsWriter::open(dir.path(), &[(0, "t-0")]).unwrap_err().to_string();
        assert!(err.contains("being written by another candor run"), "{err}");
    }

    #[test]
    fn records_of_other_examples_are_refused_with_the_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut writer, _) = PredictionsWriter::open(dir.path(), &[(0, "t-0")]).unwrap();
        writer.append(&record(0)).unwrap();
        drop(writer);
        let error = PredictionsWriter::open(dir.path(), &[(1, "t-1")])
            .unwrap_err()
            .to_string();
        assert!(
            error.ends_with("predictions.jsonl, line 1: record of example 0 ('t-0'), expected example 1 ('t-1')"),
            "{error}"
        );
    }

    #[test]
    fn complete_lines_skip_a_torn_tail() {
        let lines: Vec<&[u8]> = complete_lines(b"a\nbc\nde").collect();
        assert_eq!(lines, [b"a".as_slice(), b"bc".as_slice()]);
        assert_eq!(complete_lines(b"xyz").count(), 0);
    }
}
