//! The JSON documents of a run directory (`manifest.json`, `calibration.json`): read with errors
//! that name the file, and written pretty-printed through a temporary file and a rename, so a
//! reader (or a killed writer) never leaves half a document behind.

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;

/// Reads `path` as a `what` (e.g. "Candor run manifest"); the reading error is `context`.
pub fn read<T: DeserializeOwned>(path: &Path, what: &str, context: impl FnOnce() -> String) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(context)?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a {what}", path.display()))
}

/// Writes `value` to `path` as pretty JSON with a final newline, via `<path>.tmp` and a rename.
pub fn write_atomically<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = Path::new(&temporary);
    let text = serde_json::to_string_pretty(value)? + "\n";
    std::fs::write(temporary, text).with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(temporary, path).with_context(|| format!("writing {}", path.display()))
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
