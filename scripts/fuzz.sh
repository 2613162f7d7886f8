#!/usr/bin/env bash
# Runs every fuzz target (issue 12) for SECONDS each (default 300) and prints how many inputs
# each ran. The targets are tests named fuzz_* in the library crates (driver:
# tests/support/fuzz.rs); under plain `cargo test` they run 256 inputs each. A failure stops
# with proptest's smallest failing input: turn it into a regression test named after it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds="${1:-300}"
targets=(
  "candor-calib fuzz_verbalized_parser"
  "candor-data fuzz_jsonl_reader"
  "candor-data fuzz_csv_reader"
  "candor-data fuzz_tsv_reader"
  "candor-data fuzz_parquet_reader"
  "candor-experiment fuzz_eval_input_reader"
  "candor-experiment fuzz_manifest_parser"
  "candor-experiment fuzz_predictions_reader"
  "candor-infer fuzz_gguf_reader"
  "candor-infer fuzz_chat_template"
  "candor-server fuzz_http_request_parser"
)
cargo test --workspace --lib --no-run --quiet
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for target in "${targets[@]}"; do
  read -r crate test <<<"$target"
  if CANDOR_FUZZ_SECONDS="$seconds" cargo test --quiet -p "$crate" --lib "fuzz::$test" -- --exact --nocapture >"$log" 2>&1; then
    grep -E "^fuzz target" "$log"
  else
    # A panic shows proptest's smallest input; an abort (allocation failure, stack overflow)
    # shows only in the raw output.
    echo "fuzz target $test FAILED:"
    tail -40 "$log"
    exit 1
  fi
done
