#!/usr/bin/env bash
# Run every Candor test: fetch the default model if it is missing (tests that exercise real
# inference need it), then the whole workspace's unit, property and integration tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/fetch-default-model.sh
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-$(nproc)}"
cargo test --workspace --locked "$@"
