//! Resolving `hf:owner/repo[:file]` to local files with hf-hub: from the local cache only in
//! offline mode (`LoadOptions::offline` or `HF_HUB_OFFLINE=1`), otherwise downloading into it.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo};

use crate::error::{InferError, Result};
use crate::loader::LoadOptions;

/// Whether the environment asks for offline mode (`HF_HUB_OFFLINE` set to `1`, `true`, `yes` or `on`).
fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

fn hub_error(repo: &str, file: &str, reason: impl Into<String>) -> InferError {
    InferError::Hub {
        repo: repo.to_string(),
        file: file.to_string(),
        reason: reason.into(),
    }
}

/// Files fetched for a safetensors model; the optional ones may be absent from a repository.
const REQUIRED_DIRECTORY_FILES: [&str; 2] = ["config.json", "tokenizer.json"];
const OPTIONAL_DIRECTORY_FILES: [&str; 2] = ["tokenizer_config.json", "generation_config.json"];

/// One file of a repository, from the cache (offline) or downloaded.
struct HubFiles {
    repo: String,
    offline: bool,
    cache: Cache,
}

impl HubFiles {
    fn get(&self, file: &str) -> Result<PathBuf> {
        if let Some(path) = self.cache.model(self.repo.clone()).get(file) {
            return Ok(path);
        }
        if self.offline {
            return Err(hub_error(
                &self.repo,
                file,
                format!(
                    "not in the local hub cache {} and offline mode is on (HF_HUB_OFFLINE or --offline)",
                    self.cache.path().display()
                ),
            ));
        }
        let api = hf_hub::api::sync::ApiBuilder::from_cache(self.cache.clone())
            .with_progress(false)
            .build()
            .map_err(|e| hub_error(&self.repo, file, e.to_string()))?;
        api.repo(Repo::model(self.repo.clone()))
            .get(file)
            .map_err(|e| hub_error(&self.repo, file, e.to_string()))
    }
}

fn snapshot_dir(path: &Path, repo: &str, file: &str) -> Result<PathBuf> {
    path.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| hub_error(repo, file, "cached file has no parent directory"))
}

/// The local path of `file` (a GGUF) or, without a file, of the snapshot directory holding a
/// safetensors model (config, tokenizer, weights; sharded weights via the index file).
pub(crate) fn resolve(repo: &str, file: Option<&str>, options: &LoadOptions) -> Result<PathBuf> {
    let cache = match &options.hub_cache_dir {
        Some(dir) => Cache::new(dir.clone()),
        None => Cache::from_env(),
    };
    let files = HubFiles {
        repo: repo.to_string(),
        offline: options.offline || offline_from_env(),
        cache,
    };
    if let Some(file) = file {
        return files.get(file);
    }
    let mut dir = None;
    for required in REQUIRED_DIRECTORY_FILES {
        dir = Some(snapshot_dir(&files.get(required)?, repo, required)?);
    }
    for optional in OPTIONAL_DIRECTORY_FILES {
        // Absent optional files are fine; the loader falls back (no template, eos from tokenizer).
        let _ = files.get(optional);
    }
    match files.get("model.safetensors") {
        Ok(_) => {}
        Err(single_err) => {
            let index = files
                .get("model.safetensors.index.json")
                .map_err(|_| single_err)?;
            for shard in shard_names(&index, repo)? {
                files.get(&shard)?;
            }
        }
    }
    dir.ok_or_else(|| hub_error(repo, "config.json", "not resolved"))
}

fn shard_names(index: &Path, repo: &str) -> Result<Vec<String>> {
    let name = "model.safetensors.index.json";
    let text = std::fs::read_to_string(index).map_err(|e| InferError::io(index, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| hub_error(repo, name, e.to_string()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| hub_error(repo, name, "missing weight_map object"))?;
    let mut shards: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    shards.sort();
    shards.dedup();
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_miss_names_repo_file_and_cache() {
        let dir = tempfile::tempdir().unwrap();
        let options = LoadOptions {
            offline: true,
            hub_cache_dir: Some(dir.path().to_path_buf()),
            ..LoadOptions::default()
        };
        let err = resolve("owner/model", Some("m.gguf"), &options)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("owner/model/m.gguf") && err.contains("offline"),
            "{err}"
        );
    }

    #[test]
    fn offline_hit_returns_cached_snapshot_file() {
        let dir = tempfile::tempdir().unwrap();
        let repo_dir = dir.path().join("models--owner--model");
        std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
        std::fs::write(repo_dir.join("refs/main"), "abc123").unwrap();
        let snapshot = repo_dir.join("snapshots/abc123");
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::write(snapshot.join("m.gguf"), b"x").unwrap();
        let options = LoadOptions {
            offline: true,
            hub_cache_dir: Some(dir.path().to_path_buf()),
            ..LoadOptions::default()
        };
        assert_eq!(
            resolve("owner/model", Some("m.gguf"), &options).unwrap(),
            snapshot.join("m.gguf")
        );
    }
}
