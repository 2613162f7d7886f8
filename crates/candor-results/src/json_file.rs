//! The JSON documents of a run directory (`manifest.json`, `calibration.json`): read with errors
//! that name the file, and written pretty-printed through a temporary file and a rename, so a
//! reader (or a killed writer) never leaves half a document behind.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Why a JSON document could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JsonFileError {
    /// The file could not be read; `context` says which and what to do.
    #[error("{context}")]
    Read {
        /// What was being read, e.g. `reading runs/x/manifest.json`.
        context: String,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// The file is not the expected document.
    #[error("{}: not a {what}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The document it should be, e.g. `Candor run manifest`.
        what: String,
        /// The JSON error (line and column).
        #[source]
        source: serde_json::Error,
    },
    /// The value could not be serialised.
    #[error("serialising {}", .path.display())]
    Serialise {
        /// The file it was meant for.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The file could not be written.
    #[error("writing {}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
}

/// Reads `path` as a `what` (e.g. "Candor run manifest"); the reading error is `context`.
pub fn read<T: DeserializeOwned>(path: &Path, what: &str, context: impl FnOnce() -> String) -> Result<T, JsonFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| JsonFileError::Read { context: context(), source })?;
    serde_json::from_str(&text).map_err(|source| JsonFileError::Parse {
        path: path.to_path_buf(),
        what: what.to_string(),
        source,
    })
}

/// Writes `value` to `path` as pretty JSON with a final newline, via `<path>.tmp` and a rename.
pub fn write_atomically<T: Serialize>(path: &Path, value: &T) -> Result<(), JsonFileError> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = Path::new(&temporary);
    let text = serde_json::to_string_pretty(value)
        .map_err(|source| JsonFileError::Serialise { path: path.to_path_buf(), source })?
        + "\n";
    std::fs::write(temporary, text)
        .map_err(|source| JsonFileError::Write { path: temporary.to_path_buf(), source })?;
    std::fs::rename(temporary, path).map_err(|source| JsonFileError::Write { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_document_reads_back_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doc.json");
        write_atomically(&path, &serde_json::json!({"a": [1, 2]})).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\n  \"a\": [\n    1,\n    2\n  ]\n}\n");
        assert!(!dir.path().join("doc.json.tmp").exists());
        let back: serde_json::Value = read(&path, "document", || "reading".into()).unwrap();
        assert_eq!(back["a"][1], 2);
        std::fs::write(&path, "not json").unwrap();
        let error = read::<serde_json::Value>(&path, "document", || "reading".into()).unwrap_err();
        assert_eq!(error.to_string(), format!("{}: not a document", path.display()));
    }
}
