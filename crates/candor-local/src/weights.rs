//! Provenance of a loaded model for the run manifest: a content hash of its weights (the GGUF
//! file's sha256, or for a safetensors directory the sha256 of a `sha256sum`-style listing of its
//! `*.safetensors` files) and the storage types of its tensors (GGUF quantisation types or
//! safetensors dtypes), counted per type.

use crate::error::{Context, LocalError, Result};
use candle_core::quantized::gguf_file;
use candor_backend::WeightsInfo;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// Hashes and inspects the weights at `path` (a GGUF file or a model directory).
pub fn inspect_weights(path: &Path) -> Result<WeightsInfo> {
    if path.is_dir() {
        inspect_directory(path)
    } else {
        inspect_gguf(path)
    }
}

fn inspect_gguf(path: &Path) -> Result<WeightsInfo> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let content = gguf_file::Content::read(&mut file)
        .with_context(|| format!("reading GGUF metadata of {}", path.display()))?;
    let mut tensor_types = BTreeMap::new();
    for info in content.tensor_infos.values() {
        *tensor_types
            .entry(format!("{:?}", info.ggml_dtype))
            .or_insert(0) += 1;
    }
    let gguf_file_type = content
        .metadata
        .get("general.file_type")
        .and_then(|value| value.to_u32().ok());
    Ok(WeightsInfo {
        hash_kind: "gguf_file".into(),
        sha256: file_sha256(path)?,
        tensor_types,
        gguf_file_type,
    })
}

fn inspect_directory(dir: &Path) -> Result<WeightsInfo> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(LocalError::Invalid(format!("{}: no *.safetensors weight files", dir.display())));
    }
    let mut listing = String::new();
    let mut tensor_types = BTreeMap::new();
    for file in &files {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        listing.push_str(&format!("{}  {name}\n", file_sha256(file)?));
        for dtype in safetensors_dtypes(file)? {
            *tensor_types.entry(dtype).or_insert(0) += 1;
        }
    }
    Ok(WeightsInfo {
        hash_kind: "safetensors_files".into(),
        sha256: hex(&Sha256::digest(listing.as_bytes())),
        tensor_types,
        gguf_file_type: None,
    })
}

/// The dtype of every tensor in a safetensors file's header.
fn safetensors_dtypes(path: &Path) -> Result<Vec<String>> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length)
        .with_context(|| format!("{}: no safetensors header", path.display()))?;
    let length = u64::from_le_bytes(length);
    let mut header = Vec::new();
    file.take(length)
        .read_to_end(&mut header)
        .with_context(|| format!("reading the header of {}", path.display()))?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .with_context(|| format!("{}: the header is not a JSON object", path.display()))?;
    Ok(header
        .iter()
        .filter(|(name, _)| name.as_str() != "__metadata__")
        .filter_map(|(_, tensor)| tensor.get("dtype")?.as_str().map(str::to_string))
        .collect())
}

/// Hex sha256 of a file's bytes, streamed.
fn file_sha256(path: &Path) -> Result<String> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut hasher = Sha256::new();
    std::io::copy(&mut reader, &mut hasher)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(hex(&hasher.finalize()))
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_hash_is_the_hash_of_a_sha256sum_listing() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A minimal safetensors file: header {"w": F32 [1]} and 4 bytes of data.
        let header = br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0, 0, 128, 63]);
        std::fs::write(dir.path().join("model.safetensors"), &bytes).unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let info = inspect_weights(dir.path()).expect("inspect");
        let listing = format!("{}  model.safetensors\n", hex(&Sha256::digest(&bytes)));
        assert_eq!(info.sha256, hex(&Sha256::digest(listing.as_bytes())));
        assert_eq!(info.tensor_types, BTreeMap::from([("F32".to_string(), 1)]));
    }

    #[test]
    fn a_directory_without_weights_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let error = inspect_weights(dir.path()).unwrap_err().to_string();
        assert!(error.contains("no *.safetensors weight files"), "{error}");
    }
}
