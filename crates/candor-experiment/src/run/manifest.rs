//! The run manifest (`manifest.json`): everything that determines a run's records — model and
//! weights hash, chat template, prompt templates with their hashes, dataset and label set, sampling,
//! signals, elicitation variants and generation settings, Candor's version — plus the shard selection and when the run
//! started. Two manifests are compared field by field on their JSON form; `created_unix_s` is
//! ignored (and, when merging shards, the `selection`).

use candor_results::json_file;
use crate::error::{bail, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

use candor_backend::ModelIdentity;
use super::shard::Shard;

/// File name of the manifest inside a run directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Fields that may differ between the manifest of a run and a re-run of the same command: the
/// creation time, and where the model was found (a moved file, a server on another host) —
/// the weights' hash, the served model's name and revision still must match.
pub const VOLATILE_FIELDS: &[&str] = &["created_unix_s", "model.server.url", "model.spec", "model.source"];

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Version of the candor binary that wrote it.
    pub candor_version: String,
    /// Seconds since the Unix epoch when the run directory was created (not compared).
    pub created_unix_s: u64,
    /// The model, as its backend identifies it.
    pub model: ModelIdentity,
    /// The dataset.
    pub dataset: DatasetManifest,
    /// The prompt templates, for the signals that use them.
    pub prompts: PromptsManifest,
    /// Settings of the run.
    pub settings: Settings,
    /// Which examples this run directory holds.
    pub selection: Selection,
}

/// The dataset split and sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetManifest {
    /// `--dataset` as given.
    pub spec: String,
    /// Preset name or file stem.
    pub name: String,
    /// Split.
    pub split: String,
    /// The file the rows were read from.
    pub file: String,
    /// Hex sha256 of that file.
    pub file_sha256: String,
    /// Rows in the split before sampling.
    pub rows_in_split: usize,
    /// `--limit`.
    pub limit: Option<usize>,
    /// `--seed` of the sample.
    pub seed: u64,
    /// Examples after sampling (all shards together).
    pub examples: usize,
    /// Label names, in the order of every per-label array of the records.
    pub labels: Vec<String>,
    /// Label descriptions (`null` where a label has none).
    pub label_descriptions: Vec<Option<String>>,
    /// The task sentence given to `{task}`.
    pub task: String,
}

/// The prompt templates in use (`null` for a signal that is off).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptsManifest {
    /// The verbalized elicitation template.
    pub verbalized: Option<PromptManifest>,
    /// The label-scoring template.
    pub label: Option<PromptManifest>,
    /// Templates of elicitation variants that differ from `verbalized` (`verbalized_percent`;
    /// `verbalized_kshot`: the demonstrations before it), by signal name; absent when there are
    /// none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variants: BTreeMap<String, PromptManifest>,
}

/// One prompt template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptManifest {
    /// `builtin:<name>` or the file it was read from.
    pub source: String,
    /// Hex sha256 of `text`.
    pub sha256: String,
    /// The template text.
    pub text: String,
    /// Tokens of the rendered chat before the example text that are computed once and reused
    /// (0: every example is prefilled from scratch).
    pub shared_prefix_tokens: usize,
    /// Text the assistant's answer is made to start with after the chat-rendered template
    /// (empty: none; the label prompt's `--label-answer-prefix`).
    #[serde(default)]
    pub answer_prefix: String,
}

/// Settings that shape the records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Signals collected, in canonical order (`verbalized`, `logits`).
    pub signals: Vec<String>,
    /// `free` or `constrained` (`null` without the verbalized signal).
    pub verbalized_mode: Option<String>,
    /// Most tokens of free verbalized generation.
    pub max_tokens: usize,
    /// Most fraction digits of constrained numbers.
    pub max_fraction_digits: usize,
    /// Most prompt tokens; longer example texts are truncated to fit.
    pub max_prompt_tokens: usize,
    /// Token budget of an example text after the templates' own tokens.
    pub text_token_budget: usize,
    /// Sum tolerance of the verbalized parser (`ok` vs `renormalized`).
    pub parse_tolerance: f64,
    /// `chat` (templates sent as a chat turn) or `raw`; runs written before the option
    /// existed were chat.
    #[serde(default = "chat_format")]
    pub prompt_format: String,
    /// How the verbalized distribution was asked for; runs written before variants existed
    /// asked for the whole distribution only.
    #[serde(default)]
    pub elicitation: ElicitationSettings,
}

fn chat_format() -> String {
    "chat".to_string()
}

/// The elicitation variants of a run (`--elicitation`) and their parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElicitationSettings {
    /// Variant names, in canonical order (`distribution`, `top1`, `percent`, `permuted`,
    /// `kshot`, `sampled`).
    pub variants: Vec<String>,
    /// Seed of the `permuted` label orders (the run's `--seed`); absent without that variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permutation_seed: Option<u64>,
    /// The `kshot` demonstrations; absent without that variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kshot: Option<KshotSettings>,
    /// The `sampled` answers; absent without that variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled: Option<SampledSettings>,
}

/// The sampled answers of the `sampled` variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampledSettings {
    /// Answers per example (`--samples`).
    pub samples: usize,
    /// Their temperature (`--sample-temperature`).
    pub temperature: f64,
    /// The seed of their generators (the run's `--seed`).
    pub seed: u64,
}

impl Default for ElicitationSettings {
    fn default() -> Self {
        Self { variants: vec!["distribution".to_string()], permutation_seed: None, kshot: None, sampled: None }
    }
}

/// The demonstrations of the `kshot` variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KshotSettings {
    /// The split they were drawn from (`--kshot-split`).
    pub split: String,
    /// How many (`--kshot`).
    pub k: usize,
    /// The seed of the draw (the run's `--seed`).
    pub seed: u64,
    /// Their ids, in the order they are shown.
    pub demonstrations: Vec<String>,
}

/// The examples a run directory holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// `--shard I/N` (`null`: every example).
    pub shard: Option<Shard>,
    /// Examples this directory holds when complete.
    pub examples: usize,
    /// How many of them had their text truncated.
    pub truncated: usize,
}

impl Manifest {
    /// Reads `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        Ok(json_file::read(&path, "Candor run manifest", || format!("reading {}", path.display()))?)
    }

    /// Writes `dir/manifest.json` through a temporary file and a rename (never half-written).
    pub fn write(&self, dir: &Path) -> Result<()> {
        Ok(json_file::write_atomically(&dir.join(MANIFEST_FILE), self)?)
    }
}

/// JSON paths (`a.b.c`, array items as `a.0`) whose values differ between `left` and `right`,
/// skipping the top-level fields in `ignore`.
pub fn differing_fields(left: &Manifest, right: &Manifest, ignore: &[&str]) -> Result<Vec<String>> {
    let mut left = serde_json::to_value(left)?;
    let mut right = serde_json::to_value(right)?;
    for field in ignore {
        for value in [&mut left, &mut right] {
            remove_path(value, field);
        }
    }
    let mut differences = Vec::new();
    collect_differences("", &left, &right, &mut differences);
    Ok(differences)
}

/// Removes the field at the dotted `path` (e.g. `model.server.url`), if it is there.
fn remove_path(value: &mut Value, path: &str) {
    let (parents, last) = match path.rsplit_once('.') {
        Some((parents, last)) => (parents.split('.').collect::<Vec<_>>(), last),
        None => (Vec::new(), path),
    };
    let parent = parents.iter().try_fold(value, |v, key| v.get_mut(*key));
    if let Some(Value::Object(map)) = parent {
        map.remove(last);
    }
}

fn collect_differences(path: &str, left: &Value, right: &Value, out: &mut Vec<String>) {
    let join = |key: &str| match path {
        "" => key.to_string(),
        _ => format!("{path}.{key}"),
    };
    match (left, right) {
        (Value::Object(l), Value::Object(r)) => {
            let mut keys: Vec<&String> = l.keys().chain(r.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let null = Value::Null;
                let (a, b) = (l.get(key).unwrap_or(&null), r.get(key).unwrap_or(&null));
                collect_differences(&join(key), a, b, out);
            }
        }
        (Value::Array(l), Value::Array(r)) if l.len() == r.len() => {
            for (index, (a, b)) in l.iter().zip(r).enumerate() {
                collect_differences(&join(&index.to_string()), a, b, out);
            }
        }
        _ if left != right => out.push(path.to_string()),
        _ => {}
    }
}

/// Refuses `existing` when it differs from `wanted` beyond [`VOLATILE_FIELDS`].
pub fn check_same_run(dir: &Path, existing: &Manifest, wanted: &Manifest) -> Result<()> {
    let differences = differing_fields(existing, wanted, VOLATILE_FIELDS)?;
    if !differences.is_empty() {
        bail!(
            "{} holds a different run: its manifest differs in {}; use another --out directory \
             (or delete this one to start over)",
            dir.display(),
            differences.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_manifest_written_before_elicitation_variants_reads_as_the_distribution_only() {
        // A manifest of a served run written before `settings.elicitation` and
        // `prompts.variants` existed (and before `model.server.log_probs`, given here).
        let text = include_str!("../../tests/fixtures/manifest.json");
        assert!(!text.contains("elicitation") && !text.contains("\"variants\""));
        let mut value: Value = serde_json::from_str(text).unwrap();
        value["model"]["server"]["log_probs"] = json!("exact");
        let old: Manifest = serde_json::from_value(value).unwrap();
        assert_eq!(old.settings.elicitation, ElicitationSettings::default());
        assert_eq!(old.settings.elicitation.variants, ["distribution"]);
        assert!(old.prompts.variants.is_empty());
        // What a run of today without --elicitation writes (RunPlan: the default variants), so a
        // resume compares the two equal.
        let written = serde_json::to_value(&old).unwrap();
        assert_eq!(written["settings"]["elicitation"], json!({"variants": ["distribution"]}));
        assert!(written["prompts"].get("variants").is_none());
    }

    #[test]
    fn differences_are_listed_by_path_and_ignored_fields_skipped() {
        let left = json!({"a": 1, "b": {"c": [1, 2], "d": "x"}, "t": 5});
        let right = json!({"a": 1, "b": {"c": [1, 3], "e": null}, "t": 6});
        let mut out = Vec::new();
        collect_differences("", &left, &right, &mut out);
        assert_eq!(out, ["b.c.1", "b.d", "t"]);
        let mut out = Vec::new();
        collect_differences("", &json!({"c": [1]}), &json!({"c": [1, 2]}), &mut out);
        assert_eq!(out, ["c"]);
    }
}
