//! The dataset options shared by `candor run` and `candor dataset-info`, turned into the
//! library's [`DatasetRequest`].

use candor_data::DatasetRequest;
use std::path::PathBuf;

/// Command-line options that select and load a dataset; flatten into a subcommand's arguments.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct DatasetArgs {
    /// A data file (.jsonl, .ndjson, .csv, .tsv, .parquet) or a preset: emotion, imdb, massive.
    #[arg(long = "dataset", value_name = "SPEC")]
    pub spec: String,
    /// Directory with local copies of presets, laid out as DIR/<emotion|imdb|massive_en_us>/<split>.jsonl;
    /// a preset split missing there is fetched from the Hugging Face hub (never when HF_HUB_OFFLINE=1).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Split of a preset (default: test). For a file, the split name used in row ids (default: the file stem).
    #[arg(long, value_name = "SPLIT")]
    pub split: Option<String>,
    /// Keep a seeded, label-stratified sample of N rows (in file order) instead of every row.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Seed of the --limit sample.
    #[arg(long, value_name = "SEED", default_value_t = 0)]
    pub seed: u64,
    /// Field holding the text [default: text; massive on the hub: text].
    #[arg(long, value_name = "FIELD")]
    pub text_field: Option<String>,
    /// Field holding the label, a string or an integer [default: label; massive on the hub: label_text].
    #[arg(long, value_name = "FIELD")]
    pub label_field: Option<String>,
    /// Field holding a unique example id [default: none; ids are "<split>-<row>", row counted from 0].
    #[arg(long, value_name = "FIELD")]
    pub id_field: Option<String>,
}

impl DatasetArgs {
    /// The request these options describe.
    pub fn request(&self) -> DatasetRequest {
        DatasetRequest {
            spec: self.spec.clone(),
            data_dir: self.data_dir.clone(),
            split: self.split.clone(),
            limit: self.limit,
            seed: self.seed,
            text_field: self.text_field.clone(),
            label_field: self.label_field.clone(),
            id_field: self.id_field.clone(),
        }
    }
}
