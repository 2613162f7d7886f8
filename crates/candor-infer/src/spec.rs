//! Parsing of the user-facing model and device specifications: `path/to/model.gguf`, a model
//! directory, or `hf:owner/repo[:file]`; and `cpu`, `cuda`, `cuda:N`, `metal`.

use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{InferError, Result};

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// A single GGUF file (weights, tokenizer and chat template in its metadata).
    Gguf(PathBuf),
    /// A directory with `config.json`, `*.safetensors`, `tokenizer.json` and optionally
    /// `tokenizer_config.json` (chat template, bos/eos tokens).
    Directory(PathBuf),
    /// A Hugging Face hub repository. With `file` naming a `.gguf` file, that file is used;
    /// without it the repository is treated as a safetensors model directory.
    Hub {
        /// `owner/name`.
        repo: String,
        /// A file inside the repository, usually a `.gguf`.
        file: Option<String>,
    },
}

impl FromStr for ModelSpec {
    type Err = InferError;

    /// `hf:owner/repo` or `hf:owner/repo:file.gguf` for the hub; otherwise a path, which is a
    /// GGUF file when it ends in `.gguf` and a model directory when it is a directory.
    fn from_str(spec: &str) -> Result<Self> {
        let invalid = |reason: &str| InferError::InvalidSpec {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        if let Some(rest) = spec.strip_prefix("hf:") {
            let (repo, file) = match rest.split_once(':') {
                Some((repo, file)) if !file.is_empty() => (repo, Some(file.to_string())),
                Some(_) => return Err(invalid("empty file name after `owner/repo:`")),
                None => (rest, None),
            };
            let parts: Vec<&str> = repo.split('/').collect();
            if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
                return Err(invalid("expected hf:owner/repo or hf:owner/repo:file"));
            }
            return Ok(Self::Hub {
                repo: repo.to_string(),
                file,
            });
        }
        if spec.is_empty() {
            return Err(invalid("empty model spec"));
        }
        let path = PathBuf::from(spec);
        if path.is_dir() {
            Ok(Self::Directory(path))
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            Ok(Self::Gguf(path))
        } else if path.exists() {
            Err(invalid(
                "a file that is not .gguf (expected a .gguf file, a model directory or hf:owner/repo)",
            ))
        } else {
            Err(InferError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
            ))
        }
    }
}

impl std::fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Gguf(p) | Self::Directory(p) => write!(f, "{}", p.display()),
            Self::Hub { repo, file: None } => write!(f, "hf:{repo}"),
            Self::Hub {
                repo,
                file: Some(file),
            } => write!(f, "hf:{repo}:{file}"),
        }
    }
}

/// The compute device to run a model on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The CPU (default).
    #[default]
    Cpu,
    /// A CUDA GPU by ordinal (needs the `cuda` feature).
    Cuda(usize),
    /// The Metal GPU (needs the `metal` feature).
    Metal,
}

impl FromStr for DeviceSpec {
    type Err = InferError;

    /// `cpu`, `cuda` (= `cuda:0`), `cuda:N` or `metal`, case-insensitive.
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            "metal" => Ok(Self::Metal),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Self::Cuda(n)),
                _ => Err(InferError::Device {
                    device: s.to_string(),
                    reason: "expected cpu, cuda, cuda:N or metal".to_string(),
                }),
            },
        }
    }
}

impl DeviceSpec {
    /// Open the device; fails with a clear error when this build lacks the needed feature.
    pub fn open(self) -> Result<candle_core::Device> {
        let unavailable = |name: String, err: candle_core::Error| InferError::Device {
            device: name,
            reason: format!("{err} (build candor with the matching cargo feature: cuda or metal)"),
        };
        match self {
            Self::Cpu => Ok(candle_core::Device::Cpu),
            Self::Cuda(n) => {
                candle_core::Device::new_cuda(n).map_err(|e| unavailable(format!("cuda:{n}"), e))
            }
            Self::Metal => {
                candle_core::Device::new_metal(0).map_err(|e| unavailable("metal".into(), e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hub_specs() {
        assert_eq!(
            "hf:HuggingFaceTB/SmolLM2-135M-Instruct"
                .parse::<ModelSpec>()
                .unwrap(),
            ModelSpec::Hub {
                repo: "HuggingFaceTB/SmolLM2-135M-Instruct".into(),
                file: None
            }
        );
        assert_eq!(
            "hf:a/b:model.Q4_1.gguf".parse::<ModelSpec>().unwrap(),
            ModelSpec::Hub {
                repo: "a/b".into(),
                file: Some("model.Q4_1.gguf".into())
            }
        );
        for bad in ["hf:", "hf:a", "hf:a/", "hf:/b", "hf:a/b/c", "hf:a/b:"] {
            assert!(
                matches!(
                    bad.parse::<ModelSpec>(),
                    Err(InferError::InvalidSpec { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn parses_paths() {
        let dir = std::env::temp_dir();
        assert_eq!(
            dir.to_str().unwrap().parse::<ModelSpec>().unwrap(),
            ModelSpec::Directory(dir.clone())
        );
        assert!(matches!(
            "/no/such/model.gguf".parse::<ModelSpec>().unwrap(),
            ModelSpec::Gguf(_)
        ));
        assert!(matches!(
            "/no/such/thing".parse::<ModelSpec>(),
            Err(InferError::Io { .. })
        ));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_device_error() {
        let err = DeviceSpec::Cuda(0).open().unwrap_err().to_string();
        assert!(
            err.contains("cuda:0") && err.contains("cargo feature"),
            "{err}"
        );
    }

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("CUDA".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert_eq!("metal".parse::<DeviceSpec>().unwrap(), DeviceSpec::Metal);
        for bad in ["gpu", "cuda:", "cuda:x", ""] {
            assert!(bad.parse::<DeviceSpec>().is_err(), "{bad}");
        }
    }
}
