//! Fetching a preset's split from the Hugging Face hub (hf-hub) when no local copy was given.
//!
//! The hub cache (`$HF_HOME/hub`, by default `$HOME/.cache/huggingface/hub`) is looked at first;
//! `HF_ENDPOINT` changes the server. With
//! `HF_HUB_OFFLINE` set to `1`/`true`/`yes`/`on` the network is never touched and a file missing from
//! the cache is an error that says which file was looked for and how to provide it.

use crate::error::{bail, Context, Result};
use hf_hub::api::sync::ApiBuilder;
use hf_hub::Cache;
use std::path::{Path, PathBuf};

/// Environment variable that forbids network access to the hub.
pub const OFFLINE_VARIABLE: &str = "HF_HUB_OFFLINE";

/// A file inside a dataset repository on the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFile {
    /// Dataset repository, `owner/name`.
    pub repo: String,
    /// Path of the file inside the repository.
    pub path: String,
}

/// Whether `HF_HUB_OFFLINE` asks for offline mode.
pub fn offline_mode() -> bool {
    std::env::var(OFFLINE_VARIABLE).is_ok_and(|value| {
        matches!(
            value.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// The hub cache directory: `$HF_HOME/hub`, else `$HOME/.cache/huggingface/hub` (the hf-hub and
/// Python conventions). Computed here because hf-hub panics when it cannot find a home directory.
fn cache_dir() -> Result<PathBuf> {
    if let Some(hf_home) = std::env::var_os("HF_HOME") {
        return Ok(PathBuf::from(hf_home).join("hub"));
    }
    match std::env::var_os("HOME") {
        Some(home) => Ok(PathBuf::from(home)
            .join(".cache")
            .join("huggingface")
            .join("hub")),
        None => bail!("cannot locate the hub cache: neither HF_HOME nor HOME is set"),
    }
}

/// What was looked for locally before the hub, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalLookup {
    /// The `--data-dir` file that was missing, or `None` when no data directory was given.
    pub missing_file: Option<PathBuf>,
    /// The layout a local copy must have, e.g. `DIR/emotion/test.jsonl`.
    pub layout: String,
}

impl LocalLookup {
    /// The lookup for `split` of a preset stored as `<local_dir>` under an optional data directory.
    pub fn new(data_dir: Option<&Path>, local_dir: &str, split: &str) -> Self {
        let file_name = format!("{split}.jsonl");
        Self {
            missing_file: data_dir.map(|dir| dir.join(local_dir).join(&file_name)),
            layout: format!("DIR/{local_dir}/{file_name}"),
        }
    }

    fn what_was_tried(&self) -> String {
        match &self.missing_file {
            Some(path) => format!("{} does not exist", path.display()),
            None => "no --data-dir was given".to_string(),
        }
    }

    fn how_to_provide(&self) -> String {
        format!(
            "write the split as JSONL (one {{\"text\": ..., \"label\": ...}} object per line) to {} and pass \
             --data-dir DIR, or give a file's path as --dataset",
            self.layout
        )
    }
}

/// Returns the local path of `file`, from the hub cache or by downloading it (unless offline).
pub fn fetch(file: &HubFile, local: &LocalLookup) -> Result<PathBuf> {
    let cache = Cache::new(cache_dir()?);
    if let Some(path) = cache.dataset(file.repo.clone()).get(&file.path) {
        return Ok(path);
    }
    if offline_mode() {
        bail!(
            "{}, and hub file '{}' of dataset repository '{}' is not in the hub cache ({}) while \
             {OFFLINE_VARIABLE} is set: {}, or unset {OFFLINE_VARIABLE} to download it",
            local.what_was_tried(),
            file.path,
            file.repo,
            cache.path().display(),
            local.how_to_provide()
        );
    }
    let mut builder = ApiBuilder::from_cache(cache);
    if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
        builder = builder.with_endpoint(endpoint);
    }
    let api = builder.build().context("cannot set up the hub client")?;
    api.dataset(file.repo.clone())
        .get(&file.path)
        .with_context(|| {
            format!(
                "{}, and downloading '{}' from hub dataset repository '{}' failed: {}",
                local.what_was_tried(),
                file.path,
                file.repo,
                local.how_to_provide()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_names_the_missing_file_and_the_layout() {
        let lookup = LocalLookup::new(Some(Path::new("/data")), "imdb", "test");
        assert_eq!(
            lookup.missing_file,
            Some(PathBuf::from("/data/imdb/test.jsonl"))
        );
        assert_eq!(lookup.layout, "DIR/imdb/test.jsonl");
        assert!(lookup
            .what_was_tried()
            .contains("/data/imdb/test.jsonl does not exist"));
        let lookup = LocalLookup::new(None, "massive_en_us", "train");
        assert_eq!(lookup.what_was_tried(), "no --data-dir was given");
        assert!(lookup
            .how_to_provide()
            .contains("DIR/massive_en_us/train.jsonl"));
    }
}
