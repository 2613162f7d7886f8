//! Labelled text-classification datasets: the rows `candor run` turns into prompts.
//!
//! A dataset SPEC is either a file (`.jsonl`/`.ndjson`, `.csv`, `.tsv`, `.parquet`; see
//! [`readers`]) or a preset name (`emotion`, `imdb`, `massive`; see [`presets`]). An existing file
//! always wins over a preset of the same name. A preset's split is read from
//! `--data-dir DIR` as `DIR/<local dir>/<split>.jsonl` when that file exists, otherwise from the
//! Hugging Face hub (see [`hub`]).
//!
//! Loading checks every row (text present and non-empty, label in the label set, ids unique) and
//! fails with the file and line of the first bad row; no row is ever dropped silently. Labels become
//! indices into [`Dataset::labels`]: a preset's label set in its fixed order, or, for a plain file,
//! the distinct labels found, sorted (numerically when all are integers). Example ids come from
//! `--id-field`, or are `"<split>-<row>"` with the 0-based row index in the file (for a plain file
//! the split name defaults to the file stem). `--limit N` keeps a seeded label-stratified sample of
//! N rows in file order (see [`sample`]). Long texts are fitted to a token budget by
//! [`truncate`]. This crate knows nothing of models, prompts or calibration.
//!
//! ```
//! use candor_data::DatasetRequest;
//!
//! let dir = tempfile::tempdir()?;
//! let file = dir.path().join("reviews.jsonl");
//! std::fs::write(&file, concat!(
//!     "{\"text\": \"Loved it.\", \"label\": \"positive\"}\n",
//!     "{\"text\": \"Dull.\", \"label\": \"negative\"}\n",
//!     "{\"text\": \"A gem.\", \"label\": \"positive\"}\n",
//! ))?;
//! let request = DatasetRequest { spec: file.display().to_string(), limit: Some(2), ..DatasetRequest::default() };
//! let dataset = request.load()?;
//! // Labels sorted; a stratified sample of 2 keeps one row per label, in file order.
//! let labels: Vec<&str> = dataset.labels.iter().map(|l| l.name.as_str()).collect();
//! assert_eq!(labels, ["negative", "positive"]);
//! assert_eq!(dataset.examples.len(), 2);
//! assert_eq!(dataset.label_counts(), [1, 1]);
//! assert!(dataset.examples.iter().any(|e| e.id == "reviews-1")); // the only negative row
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// Input never panics the library: no unwrap/expect outside tests (errors name what was wrong).
#![deny(clippy::unwrap_used, clippy::expect_used)]

mod error;
mod hub;
mod presets;
mod readers;
mod sample;
pub mod truncate;

pub use error::{DataError, Result};
pub use readers::{json_kind, read_bounded_line, MAX_LINE_BYTES};

use error::bail;

/// Most labels a dataset may have: every label is a continuation scored for every example and
/// a key of the verbalized dict (MASSIVE has 60).
pub const MAX_LABELS: usize = 1000;
use presets::{find_preset, Preset};
use readers::{row_error, FieldNames, Location, RawLabel, RawRow};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// What dataset to load and how: the library form of `candor run`'s dataset options (their
/// flags are named in the field docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatasetRequest {
    /// A data file (.jsonl, .ndjson, .csv, .tsv, .parquet) or a preset: emotion, imdb, massive (`--dataset`).
    pub spec: String,
    /// Directory with local copies of presets, laid out as DIR/<emotion|imdb|massive_en_us>/<split>.jsonl;
    /// a preset split missing there is fetched from the Hugging Face hub (never when HF_HUB_OFFLINE=1).
    pub data_dir: Option<PathBuf>,
    /// Split of a preset (default: test). For a file, the split name used in row ids (default: the file stem).
    pub split: Option<String>,
    /// Keep a seeded, label-stratified sample of N rows (in file order) instead of every row (`--limit`).
    pub limit: Option<usize>,
    /// Seed of the `--limit` sample.
    pub seed: u64,
    /// Field holding the text [default: text; massive on the hub: text].
    pub text_field: Option<String>,
    /// Field holding the label, a string or an integer [default: label; massive on the hub: label_text].
    pub label_field: Option<String>,
    /// Field holding a unique example id [default: none; ids are "<split>-<row>", row counted from 0].
    pub id_field: Option<String>,
}

/// A label of a loaded dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Label {
    /// The label string, as the model is asked to produce it.
    pub name: String,
    /// A natural-language description for prompts (presets only).
    pub description: Option<String>,
}

/// One labelled example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Unique id: the id field's value, or `"<split>-<row>"`.
    pub id: String,
    /// 0-based row index in the file.
    pub row: usize,
    /// The text to classify.
    pub text: String,
    /// Index into [`Dataset::labels`].
    pub label: usize,
}

/// Where a dataset's rows were read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// A file given as the SPEC.
    File {
        /// The file.
        path: PathBuf,
    },
    /// A preset's split found under `--data-dir`.
    DataDir {
        /// The file.
        path: PathBuf,
    },
    /// A preset's split from the hub (possibly from the local hub cache).
    Hub {
        /// Dataset repository.
        repo: String,
        /// File inside the repository.
        file: String,
        /// Local path of the downloaded or cached file.
        path: PathBuf,
    },
}

impl Origin {
    /// The local file the rows were read from.
    pub fn path(&self) -> &Path {
        match self {
            Self::File { path } | Self::DataDir { path } | Self::Hub { path, .. } => path,
        }
    }
}

/// A loaded dataset split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// The preset name, or the file stem for a file.
    pub name: String,
    /// The split name (also the prefix of derived ids).
    pub split: String,
    /// The preset's task description, for prompts.
    pub task: Option<String>,
    /// Where the rows came from.
    pub origin: Origin,
    /// The label set; [`Example::label`] indexes it.
    pub labels: Vec<Label>,
    /// Number of rows in the split before sampling.
    pub rows_in_split: usize,
    /// Row count per label before sampling, in label order.
    pub counts_in_split: Vec<usize>,
    /// The `--limit` asked for (`None`: every row).
    pub limit: Option<usize>,
    /// The sampling seed.
    pub seed: u64,
    /// The selected examples, in file order.
    pub examples: Vec<Example>,
}

impl Dataset {
    /// Number of selected examples per label, in label order.
    pub fn label_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.labels.len()];
        for example in &self.examples {
            counts[example.label] += 1;
        }
        counts
    }
}

/// The file to read and how to read it, once a SPEC is resolved.
struct Source {
    name: String,
    split: String,
    origin: Origin,
    fields: FieldNames,
    preset: Option<&'static Preset>,
}

impl DatasetRequest {
    /// Resolves the SPEC, reads and checks every row, and applies `--limit`.
    pub fn load(&self) -> Result<Dataset> {
        if self.limit == Some(0) {
            bail!("--limit must be at least 1");
        }
        let source = self.resolve()?;
        let path = source.origin.path().to_path_buf();
        let rows = readers::read_rows(&path, &source.fields)?;
        let (labels, all_examples) = label_rows(rows, source.preset, &source.split, &path)?;
        if labels.len() > MAX_LABELS {
            bail!(
                "{}: {} distinct labels; Candor handles at most {MAX_LABELS} (each is scored per example and is a key of the verbalized dict)",
                path.display(),
                labels.len()
            );
        }
        let rows_in_split = all_examples.len();
        let label_of: Vec<usize> = all_examples.iter().map(|example| example.label).collect();
        let mut counts_in_split = vec![0; labels.len()];
        for &label in &label_of {
            counts_in_split[label] += 1;
        }
        let examples = match self.limit {
            Some(limit) if limit < rows_in_split => {
                let keep = sample::stratified_sample(&label_of, labels.len(), limit, self.seed);
                let mut keep = keep.into_iter().peekable();
                all_examples
                    .into_iter()
                    .enumerate()
                    .filter(|(position, _)| keep.next_if_eq(position).is_some())
                    .map(|(_, example)| example)
                    .collect()
            }
            _ => all_examples,
        };
        Ok(Dataset {
            name: source.name,
            split: source.split,
            task: source.preset.map(|preset| preset.task.to_string()),
            origin: source.origin,
            labels,
            rows_in_split,
            counts_in_split,
            limit: self.limit,
            seed: self.seed,
            examples,
        })
    }

    fn fields(&self, default_text: &str, default_label: &str) -> FieldNames {
        FieldNames {
            text: self
                .text_field
                .clone()
                .unwrap_or_else(|| default_text.to_string()),
            label: self
                .label_field
                .clone()
                .unwrap_or_else(|| default_label.to_string()),
            id: self.id_field.clone(),
        }
    }

    fn resolve(&self) -> Result<Source> {
        let spec_path = Path::new(&self.spec);
        if !spec_path.is_file() {
            if let Some(preset) = find_preset(&self.spec) {
                return self.resolve_preset(preset);
            }
            if spec_path.is_dir() {
                bail!(
                    "{} is a directory: give a data file, or a preset name with --data-dir {}",
                    spec_path.display(),
                    spec_path.display()
                );
            }
            if !looks_like_a_path(&self.spec) {
                bail!(
                    "unknown dataset preset '{}' (presets: {}); to read a file, give its path \
                     (.jsonl, .ndjson, .csv, .tsv or .parquet)",
                    self.spec,
                    presets::preset_names()
                );
            }
            readers::FileFormat::from_path(spec_path)?;
            bail!("{}: no such file", spec_path.display());
        }
        let stem = spec_path.file_stem().map_or_else(
            || self.spec.clone(),
            |stem| stem.to_string_lossy().into_owned(),
        );
        Ok(Source {
            split: self.split.clone().unwrap_or_else(|| stem.clone()),
            name: stem,
            origin: Origin::File {
                path: spec_path.to_path_buf(),
            },
            fields: self.fields("text", "label"),
            preset: None,
        })
    }

    fn resolve_preset(&self, preset: &'static Preset) -> Result<Source> {
        let split = self.split.clone().unwrap_or_else(|| "test".to_string());
        if !preset.splits.contains(&split.as_str()) {
            bail!(
                "preset '{}' has no split '{split}' (splits: {})",
                preset.name,
                preset.splits.join(", ")
            );
        }
        let local = self
            .data_dir
            .as_ref()
            .map(|dir| dir.join(preset.local_dir).join(format!("{split}.jsonl")))
            .filter(|path| path.is_file());
        let (origin, fields) = match local {
            Some(path) => (Origin::DataDir { path }, self.fields("text", "label")),
            None => {
                let file = hub::HubFile {
                    repo: preset.hub.repo.to_string(),
                    path: preset.hub.file_for(&split),
                };
                let lookup =
                    hub::LocalLookup::new(self.data_dir.as_deref(), preset.local_dir, &split);
                let path = hub::fetch(&file, &lookup).map_err(|error| DataError::Failed {
                    context: format!("cannot find split '{split}' of preset '{}'", preset.name),
                    source: Box::new(error),
                })?;
                let origin = Origin::Hub {
                    repo: file.repo,
                    file: file.path,
                    path,
                };
                (
                    origin,
                    self.fields(preset.hub.text_field, preset.hub.label_field),
                )
            }
        };
        Ok(Source {
            name: preset.name.to_string(),
            split,
            origin,
            fields,
            preset: Some(preset),
        })
    }
}

/// Whether a SPEC that is neither a file nor a preset was meant as a path (so "no such file" is
/// the right error rather than "unknown preset").
fn looks_like_a_path(spec: &str) -> bool {
    let path = Path::new(spec);
    path.extension().is_some() || path.components().count() > 1
}

/// Checks every row and turns raw labels into label indices; returns the label set and examples.
fn label_rows(
    rows: Vec<RawRow>,
    preset: Option<&Preset>,
    split: &str,
    path: &Path,
) -> Result<(Vec<Label>, Vec<Example>)> {
    let labels = match preset {
        Some(preset) => preset
            .labels
            .iter()
            .map(|label| Label {
                name: label.name.to_string(),
                description: Some(label.description.to_string()),
            })
            .collect(),
        None => labels_found(&rows, path)?,
    };
    let index_of: HashMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(index, label)| (label.name.as_str(), index))
        .collect();
    let mut first_seen: HashMap<String, Location> = HashMap::with_capacity(rows.len());
    let mut examples = Vec::with_capacity(rows.len());
    for row in rows {
        let location = row.location;
        let label = match preset {
            Some(preset) => preset_label(&row.label, preset, &index_of),
            None => Ok(index_of[raw_label_string(&row.label).as_ref()]),
        }
        .map_err(|problem| row_error(path, location, problem))?;
        if row.text.trim().is_empty() {
            return Err(row_error(path, location, "empty text"));
        }
        let id = row.id.unwrap_or_else(|| format!("{split}-{}", row.index));
        if id.is_empty() {
            return Err(row_error(path, location, "empty id"));
        }
        if let Some(previous) = first_seen.insert(id.clone(), location) {
            return Err(row_error(
                path,
                location,
                format!("duplicate id '{id}' (first at {previous})"),
            ));
        }
        examples.push(Example {
            id,
            row: row.index,
            text: row.text,
            label,
        });
    }
    Ok((labels, examples))
}

fn raw_label_string(label: &RawLabel) -> std::borrow::Cow<'_, str> {
    match label {
        RawLabel::Text(text) => text.as_str().into(),
        RawLabel::Integer(integer) => integer.to_string().into(),
    }
}

/// The label set of a file without a preset: its distinct labels, sorted numerically when all are
/// integers and as strings otherwise. An empty label is an error.
fn labels_found(rows: &[RawRow], path: &Path) -> Result<Vec<Label>> {
    let mut distinct = BTreeSet::new();
    for row in rows {
        let label = raw_label_string(&row.label);
        if label.trim().is_empty() {
            return Err(row_error(path, row.location, "empty label"));
        }
        distinct.insert(label.into_owned());
    }
    let mut names: Vec<String> = distinct.into_iter().collect();
    if names.iter().all(|name| name.parse::<i64>().is_ok()) {
        names.sort_by_key(|name| name.parse::<i64>().unwrap_or_default());
    }
    Ok(names
        .into_iter()
        .map(|name| Label {
            name,
            description: None,
        })
        .collect())
}

/// Maps a raw label to a preset's label index. Integer labels (or strings of digits) go through
/// the preset's integer label names when it has them.
fn preset_label(
    label: &RawLabel,
    preset: &Preset,
    index_of: &HashMap<&str, usize>,
) -> Result<usize, String> {
    let valid = || preset.label_names().collect::<Vec<_>>().join(", ");
    let integer = match label {
        RawLabel::Text(text) => {
            if let Some(&index) = index_of.get(text.as_str()) {
                return Ok(index);
            }
            match (preset.integer_labels, text.trim().parse::<i64>()) {
                (Some(_), Ok(integer)) => integer,
                _ => {
                    return Err(format!(
                        "label '{text}' is not a label of {} (valid: {})",
                        preset.name,
                        valid()
                    ))
                }
            }
        }
        RawLabel::Integer(integer) => *integer,
    };
    let Some(by_integer) = preset.integer_labels else {
        return Err(format!(
            "integer label {integer}, but {} labels are strings (valid: {})",
            preset.name,
            valid()
        ));
    };
    let name = usize::try_from(integer)
        .ok()
        .and_then(|index| by_integer.get(index))
        .ok_or_else(|| {
            let mapping: Vec<String> = by_integer
                .iter()
                .enumerate()
                .map(|(index, name)| format!("{index} = {name}"))
                .collect();
            format!(
                "integer label {integer} is out of range for {} (valid: {})",
                preset.name,
                mapping.join(", ")
            )
        })?;
    Ok(index_of[name])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(index: usize, label: RawLabel) -> RawRow {
        RawRow {
            index,
            location: Location::Line(index as u64 + 1),
            id: None,
            text: format!("text {index}"),
            label,
        }
    }

    fn imdb() -> &'static Preset {
        find_preset("imdb").expect("imdb preset")
    }

    #[test]
    fn integer_labels_map_through_the_preset() {
        let emotion = find_preset("emotion").expect("emotion preset");
        let rows = vec![
            raw(0, RawLabel::Integer(0)),
            raw(1, RawLabel::Integer(3)),
            raw(2, RawLabel::Text("5".into())),
        ];
        let (labels, examples) =
            label_rows(rows, Some(emotion), "test", Path::new("f.jsonl")).expect("labels");
        let names: Vec<&str> = examples
            .iter()
            .map(|e| labels[e.label].name.as_str())
            .collect();
        assert_eq!(names, ["sadness", "anger", "surprise"]);
        assert_eq!(examples[2].id, "test-2");
    }

    #[test]
    fn out_of_range_integer_label_lists_the_mapping() {
        let rows = vec![raw(0, RawLabel::Integer(2))];
        let error = label_rows(rows, Some(imdb()), "test", Path::new("f.parquet"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "f.parquet, line 1: integer label 2 is out of range for imdb (valid: 0 = negative, 1 = positive)"
        );
    }

    #[test]
    fn plain_file_integer_labels_sort_numerically() {
        let rows = vec![
            raw(0, RawLabel::Integer(10)),
            raw(1, RawLabel::Integer(2)),
            raw(2, RawLabel::Text("2".into())),
        ];
        let (labels, examples) = label_rows(rows, None, "s", Path::new("f.jsonl")).expect("labels");
        let names: Vec<&str> = labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["2", "10"]);
        assert_eq!(
            examples.iter().map(|e| e.label).collect::<Vec<_>>(),
            [1, 0, 0]
        );
    }

    #[test]
    fn more_labels_than_the_limit_are_refused_with_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("many.jsonl");
        let lines: String = (0..=MAX_LABELS).map(|i| format!("{{\"text\": \"t\", \"label\": \"l{i}\"}}\n")).collect();
        std::fs::write(&path, lines).unwrap();
        let request = DatasetRequest { spec: path.display().to_string(), ..DatasetRequest::default() };
        let err = request.load().unwrap_err().to_string();
        assert!(err.contains("1001 distinct labels") && err.contains("at most 1000"), "{err}");
    }

    #[test]
    fn specs_that_look_like_paths() {
        assert!(looks_like_a_path("data.jsonl"));
        assert!(looks_like_a_path("dir/imdb"));
        assert!(!looks_like_a_path("imbd"));
    }
}

#[cfg(test)]
mod fuzz;
