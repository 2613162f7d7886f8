#!/usr/bin/env bash
# Run every Candor test: fetch the default model, Gemma 3 270M and Llama 2's vocabulary if they
# are missing (tests that exercise real inference and real tokenizers need them), then the
# whole workspace's unit, property and integration tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/fetch-default-model.sh
scripts/fetch-model.sh gemma3-270m
scripts/fetch-model.sh llama-spm-vocab
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-$(nproc)}"
cargo test --workspace --locked "$@"
