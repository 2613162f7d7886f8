#!/usr/bin/env bash
# Candor's main job for a newcomer, from a fresh clone: fetch the default model (SmolLM2-135M-
# Instruct, Q4_1 GGUF), build the release binary, then `candor demo`: on Candor's own demo dataset
# (300 short emotion texts, embedded in the binary) collect both signals of the model —
# constrained verbalized distributions and exact label log-probs — for a stratified sample,
# calibrate each on half of it, and write runs/demo/report.md and runs/demo/report.html.
# Re-running resumes the run in runs/demo.
#   CANDOR_DEMO_LIMIT=300 scripts/demo.sh   # the whole demo dataset (slower)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

limit="${CANDOR_DEMO_LIMIT:-120}"

scripts/fetch-default-model.sh
cargo build --release --locked -p candor-cli
candor=target/release/candor

echo "== the model answers a question (greedy, exact f32 forward)"
"$candor" generate --chat --prompt "What is the capital of France?" --max-tokens 24

echo "== candor demo: $limit examples, both signals, calibrated, reported"
"$candor" demo --limit "$limit" --out runs/demo
echo "== open runs/demo/report.html in a browser; runs/demo/report.md is the same in Markdown"
