#!/usr/bin/env bash
# Throughput of candor-infer on the default model (issue 3): prefill tok/s, decode tok/s, label
# scoring and constrained verbalized examples/s, each against a naive baseline in the same run
# (see crates/candor-infer/examples/bench_infer.rs). Extra arguments go to the bench binary,
# e.g. `scripts/bench-infer.sh --examples 12` or a path to another GGUF model.
#
# Figures mean something only on an otherwise idle machine: the script refuses to start while a
# compiler is running (set BENCH_FORCE=1 to override) and pins RAYON_NUM_THREADS to the core count.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/fetch-default-model.sh
cargo build --release --locked -p candor-infer --example bench_infer

if pgrep -x rustc >/dev/null && [[ "${BENCH_FORCE:-0}" != 1 ]]; then
  echo "error: rustc is running; benchmark figures would be meaningless (BENCH_FORCE=1 to override)" >&2
  exit 1
fi
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-$(nproc)}"
target_dir="${CARGO_TARGET_DIR:-target}"
"$target_dir/release/examples/bench_infer" "$@"
