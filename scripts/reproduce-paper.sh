#!/usr/bin/env bash
# Reproduces the README's results table: the default model (SmolLM2-135M-Instruct, Q4_1) on a
# stratified sample of the test split of Emotion, IMDB and Amazon MASSIVE (en-US), both signals
# (constrained verbalized distributions and label log-probs), calibrated on half of each class
# and measured on the other half; then one report per dataset and the summary table.
#   scripts/reproduce-paper.sh DATA_DIR        # DATA_DIR/<emotion|imdb|massive_en_us>/test.jsonl
#   EMOTION_LIMIT=2000 scripts/reproduce-paper.sh DATA_DIR   # larger samples (slower)
#   MODEL=gemma3-270m scripts/reproduce-paper.sh DATA_DIR     # Gemma 3 270M (base) instead:
#                                                               runs/gemma3-270m-<dataset>/
# Without DATA_DIR the presets are downloaded from the Hugging Face hub (needs network).
# Re-running resumes unfinished runs. Output: runs/paper-<dataset>/ and runs/paper-summary.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

data_dir="${1:-}"
model_name="${MODEL:-smollm2-135m}"
case "$model_name" in
  smollm2-135m) model="models/SmolLM2-135M-Instruct.Q4_1.gguf" prefix="runs/paper" ;;
  gemma3-270m) model="models/gemma-3-270m-q4_k_m.gguf" prefix="runs/gemma3-270m" ;;
  *) echo "error: MODEL must be smollm2-135m or gemma3-270m, got $model_name" >&2; exit 2 ;;
esac
declare -A limits=(
  [emotion]="${EMOTION_LIMIT:-300}"
  [imdb]="${IMDB_LIMIT:-200}"
  [massive]="${MASSIVE_LIMIT:-120}"
)

scripts/fetch-model.sh "$model_name"
cargo build --release --locked -p candor-cli
candor=target/release/candor
data_args=()
if [[ -n "$data_dir" ]]; then data_args=(--data-dir "$data_dir"); fi

summary_args=()
for dataset in emotion imdb massive; do
  out="$prefix-$dataset"
  echo "== $dataset: ${limits[$dataset]} test examples -> $out"
  start=$(date +%s)
  "$candor" run --model "$model" --dataset "$dataset" "${data_args[@]}" --split test \
    --limit "${limits[$dataset]}" --verbalized constrained --out "$out"
  echo "   model run: $(( $(date +%s) - start )) s wall-clock"
  "$candor" calibrate --run "$out" --quiet
  "$candor" report --run "$out" --format md
  "$candor" report --run "$out" --format html
  summary_args+=(--run "$out")
done
"$candor" summarize "${summary_args[@]}" | tee "$prefix-summary.md"
