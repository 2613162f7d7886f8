#!/usr/bin/env bash
# Candor's GGUF tokenizers against llama.cpp's expected ids on llama.cpp's own vocab test files
# (vocab-only GGUFs + corpus + ids, vendor/llama.cpp/models/ in the llama-cpp-python 0.3.36
# sdist from the Python package index): Llama 2 / Mistral SentencePiece (llama-spm), Llama 3
# BPE (llama-bpe), Qwen2 and Phi-3. Not part of the test command (a 77 MB download); the real
# model tokenizers (SmolLM2, Gemma 3) are checked by the test suite (tests/llama_cpp_tokens.rs).
#
#   scripts/check-tokenizers.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
version="0.3.36"
sdist_dir="$root/target/bench-llama"
sdist="$sdist_dir/llama_cpp_python-$version.tar.gz"
vocab_dir="$root/target/vocab"
families=(llama-spm llama-bpe qwen2 phi-3)

if [[ ! -f "$sdist" ]]; then
  mkdir -p "$sdist_dir"
  python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python "llama-cpp-python==$version" -d "$sdist_dir"
fi
mkdir -p "$vocab_dir"
patterns=()
for family in "${families[@]}"; do patterns+=("*/models/ggml-vocab-$family.gguf*"); done
tar xzf "$sdist" -C "$vocab_dir" --strip-components=4 --wildcards "${patterns[@]}"
cargo build --release --locked -p candor-infer --example check_vocab
files=()
for family in "${families[@]}"; do files+=("$vocab_dir/ggml-vocab-$family.gguf"); done
"$root/target/release/examples/check_vocab" "${files[@]}"
