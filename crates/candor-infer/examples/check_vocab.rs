//! Candor's tokenizer built from a GGUF's metadata against llama.cpp's expected token ids for
//! the same file: llama.cpp ships vocab-only GGUFs of many families with a test corpus
//! (`ggml-vocab-NAME.gguf.inp`, cases separated by `__ggml_vocab_test__` lines) and its ids
//! (`.gguf.out`, one line per case), under `vendor/llama.cpp/models/` of the llama-cpp-python
//! sdist. `scripts/check-tokenizers.sh` fetches them and runs this for each family.
//!
//!   cargo run --release -p candor-infer --example check_vocab -- ggml-vocab-llama-spm.gguf ...
//!
//! Prints one line per file (cases, mismatches) and each mismatch; exits 1 on any mismatch.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use candor_infer::Tokenizer;

const SEPARATOR: &str = "\n__ggml_vocab_test__\n";

/// The mismatching cases of one vocab file, as printable lines.
fn check(gguf: &Path) -> Result<(usize, Vec<String>), String> {
    let with_suffix = |suffix: &str| PathBuf::from(format!("{}{suffix}", gguf.display()));
    let read = |path: PathBuf| std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()));
    let inputs = read(with_suffix(".inp"))?;
    let outputs = read(with_suffix(".out"))?;
    // Each case ends with the separator (the empty string is a case too).
    let mut cases: Vec<&str> = inputs.split(SEPARATOR).collect();
    if cases.last() == Some(&"") {
        cases.pop();
    }
    let expected: Vec<&str> = outputs.split('\n').take(cases.len()).collect();
    if expected.len() != cases.len() {
        return Err(format!("{}: {} cases but {} id lines", gguf.display(), cases.len(), expected.len()));
    }
    let tokenizer = Tokenizer::from_gguf_file(gguf).map_err(|e| e.to_string())?;
    let mut mismatches = Vec::new();
    for (case, line) in cases.iter().zip(expected) {
        let want: Vec<u32> = line
            .split_whitespace()
            .map(|id| id.parse().map_err(|_| format!("{}: id `{id}` is not a number", gguf.display())))
            .collect::<Result<_, _>>()?;
        let got = tokenizer.encode(case).map_err(|e| e.to_string())?;
        if got != want {
            mismatches.push(format!("  {case:?}: candor {got:?}, llama.cpp {want:?}"));
        }
    }
    Ok((cases.len(), mismatches))
}

fn main() -> ExitCode {
    let mut failed = false;
    for path in std::env::args().skip(1).map(PathBuf::from) {
        match check(&path) {
            Ok((cases, mismatches)) => {
                let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
                println!("{name}: {cases} cases, {} mismatches", mismatches.len());
                mismatches.iter().for_each(|line| println!("{line}"));
                failed |= !mismatches.is_empty();
            }
            Err(message) => {
                eprintln!("error: {message}");
                failed = true;
            }
        }
    }
    match failed {
        true => ExitCode::FAILURE,
        false => ExitCode::SUCCESS,
    }
}
