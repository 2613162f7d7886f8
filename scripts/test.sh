#!/usr/bin/env bash
# Run every Candor test: fetch the default model, Gemma 3 270M and Llama 2's vocabulary if they
# are missing (tests that exercise real inference and real tokenizers need them, and fail
# without them), then the whole workspace's unit, property and integration tests, and say how
# many tests ran on real model files.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/fetch-default-model.sh
scripts/fetch-model.sh gemma3-270m
scripts/fetch-model.sh llama-spm-vocab
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-$(nproc)}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
status="${PIPESTATUS[0]}"
set -e
# The test files that run real model files (SmolLM2, Gemma 3, llama.cpp's vocabularies).
awk '
  /^ *Running / { model = ($2 ~ /tests\/(model|gemma3|llama_cpp_tokens|infer|run|serve|demo)\.rs$/) }
  /^test result:/ && model { for (i = 1; i <= NF; i++) if ($i == "passed;") ran += $(i - 1) }
  END { printf "model-backed tests run: %d (model, gemma3, llama_cpp_tokens, infer, run, serve, demo)\n", ran }
' "$log"
exit "$status"
