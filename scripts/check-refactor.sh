#!/usr/bin/env bash
# Behaviour check for a refactor: run the same commands with the candor binary of BASE_REF and
# with the current tree's, and compare every file they write, byte for byte, after removing the
# fields that measure time (records' elapsed_ms, the manifest's created_unix_s, the summed
# model_seconds and the "model time" it is printed as). Exits 1 on any other difference.
#
#   scripts/check-refactor.sh BASE_REF [DATA_DIR]     # e.g. BASE_REF = the commit before the refactor
#   BASE_CANDOR=/path/to/candor scripts/check-refactor.sh BASE_REF   # reuse a built baseline binary
#
# The commands: `candor demo` (40 examples), `candor run` on 16 Emotion test examples from
# DATA_DIR (default ../shared/datasets) with constrained verbalized answers, `calibrate`,
# `report` in md/json/html, `summarize` over both runs and `eval` of each signal of the run.
# The baseline is built from `git archive BASE_REF` under target/check-refactor/ (cached per
# commit; ~5-10 minutes on 2 cores the first time). Needs jq and the default model.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
base_ref="${1:?usage: scripts/check-refactor.sh BASE_REF [DATA_DIR]}"
data_dir="$(cd "${2:-$root/../shared/datasets}" && pwd)"
work="$root/target/check-refactor"
base_commit="$(git rev-parse --verify "$base_ref^{commit}")"
mkdir -p "$work"

scripts/fetch-default-model.sh >/dev/null
base_bin="${BASE_CANDOR:-}"
if [[ -z "$base_bin" ]]; then
  tree="$work/base-$base_commit"
  if [[ ! -x "$tree/target/release/candor" ]]; then
    echo "== building the baseline $base_commit"
    rm -rf "$tree" && mkdir -p "$tree"
    git archive "$base_commit" | tar -x -C "$tree"
    (cd "$tree" && cargo build --release --locked -p candor-cli)
  fi
  base_bin="$tree/target/release/candor"
fi
echo "== building the current tree"
cargo build --release --locked -p candor-cli
new_bin="$root/target/release/candor"
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-$(nproc)}"

# Every command, in a fresh directory whose models/ is the repository's (same relative paths in
# both runs, so paths recorded in the outputs agree).
run_commands() {
  local bin="$1" dir="$2"
  rm -rf "$dir" && mkdir -p "$dir" && ln -s "$root/models" "$dir/models"
  (
    cd "$dir"
    "$bin" demo --limit 40 --bootstrap 200 --out runs/demo
    "$bin" run --dataset emotion --data-dir "$data_dir" --split test --limit 16 \
      --verbalized constrained --out runs/emotion --quiet
    "$bin" calibrate --run runs/emotion --bootstrap 200 --quiet
    for format in md json html; do "$bin" report --run runs/emotion --format "$format"; done
    "$bin" summarize --run runs/demo --run runs/emotion >runs/summary.md
    "$bin" eval --run runs/emotion --signal logits --bootstrap 100 --json >runs/eval-logits.json
    "$bin" eval --run runs/emotion --signal verbalized --bootstrap 100 >runs/eval-verbalized.txt
  ) >"$dir.log" 2>&1 || { echo "error: $bin failed, see $dir.log" >&2; tail -5 "$dir.log" >&2; exit 1; }
}

# A file's content with its timing fields removed.
normalised() {
  local file="$1"
  case "$file" in
    */predictions.jsonl) jq -c 'del(.elapsed_ms)' "$file" ;;
    */manifest.json) jq 'del(.created_unix_s)' "$file" ;;
    */calibration.json | */report.json) jq 'del(.run.model_seconds)' "$file" ;;
    *.md | *.html) sed -E 's/model time [0-9.]+ (s|min)/model time …/g; s/\| [0-9.]+ min \(/| … min (/g' "$file" ;;
    *) cat "$file" ;;
  esac
}

echo "== baseline: $base_bin"
run_commands "$base_bin" "$work/out-base"
echo "== current: $new_bin"
run_commands "$new_bin" "$work/out-new"

status=0
compared=0
while IFS= read -r relative; do
  base_file="$work/out-base/runs/$relative" new_file="$work/out-new/runs/$relative"
  if [[ ! -f "$new_file" ]]; then
    echo "DIFFERENT: $relative is missing from the current tree's output"; status=1; continue
  fi
  compared=$((compared + 1))
  if cmp -s <(normalised "$base_file") <(normalised "$new_file"); then
    echo "identical: $relative"
  else
    echo "DIFFERENT: $relative"; status=1
    diff <(normalised "$base_file") <(normalised "$new_file") | head -10
  fi
done < <(cd "$work/out-base/runs" && find . -type f | sed 's|^\./||' | sort)
extra="$(cd "$work/out-new/runs" && find . -type f | sed 's|^\./||' | sort | comm -13 <(cd "$work/out-base/runs" && find . -type f | sed 's|^\./||' | sort) -)"
if [[ -n "$extra" ]]; then
  echo "DIFFERENT: only the current tree wrote: $extra"; status=1
fi
if [[ "$status" == 0 ]]; then
  echo "check-refactor: all $compared files identical (timing fields aside) to $base_commit"
else
  echo "check-refactor: outputs differ from $base_commit" >&2
fi
exit "$status"
