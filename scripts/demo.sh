#!/usr/bin/env bash
# Candor's main job for a newcomer, from a fresh clone: fetch the default model (SmolLM2-135M-
# Instruct, Q4_1 GGUF), build the release binary, then on Candor's own demo dataset (300 short
# emotion texts, crates/candor-cli/data/) collect both signals of the model — constrained
# verbalized distributions and exact label log-probs — for a stratified sample, and calibrate and
# measure each signal with `candor eval`. Re-running resumes the run in runs/demo.
#   CANDOR_DEMO_LIMIT=300 scripts/demo.sh   # the whole demo dataset (slower)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

limit="${CANDOR_DEMO_LIMIT:-60}"
model="models/SmolLM2-135M-Instruct.Q4_1.gguf"

scripts/fetch-default-model.sh
cargo build --release --locked -p candor-cli
candor=target/release/candor

echo "== the model answers a question (greedy, exact f32 forward)"
"$candor" generate --model "$model" --chat --prompt "What is the capital of France?"

echo "== both signals on $limit demo examples -> runs/demo-$limit"
"$candor" run --model "$model" --dataset crates/candor-cli/data/demo_emotion.jsonl \
  --limit "$limit" --verbalized constrained --out "runs/demo-$limit"

echo "== verbalized signal: calibrated on half, measured on the other half"
"$candor" eval --run "runs/demo-$limit" --signal verbalized
echo "== token-logit signal: calibrated on half, measured on the other half"
"$candor" eval --run "runs/demo-$limit" --signal logits
