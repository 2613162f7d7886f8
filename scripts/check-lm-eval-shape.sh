#!/usr/bin/env bash
# lm-evaluation-harness's request shape against `candor serve` (issue 11): serves the default
# model, sends the harness's loglikelihood requests with Python's standard library
# (scripts/served/lm_eval_shape.py) and compares them with `candor score --json`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
model="${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
[[ -f "$model" ]] || scripts/fetch-default-model.sh
cargo build --release -p candor-cli --quiet
candor="target/release/candor"
work="$(mktemp -d)"
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
"$candor" serve --model "$model" --port 0 --served-model-name smol 2>"$work/serve.log" &
server=$!
for _ in $(seq 1 100); do grep -q listening "$work/serve.log" && break; sleep 0.2; done
url="$(grep -o 'http://[0-9.:]*/v1' "$work/serve.log")"
context="I finally got the job I wanted, so today I feel"
"$candor" score --model "$model" --prompt "$context" --labels " joy, sadness, anger, fear" --json >"$work/score.json"
python3 scripts/served/lm_eval_shape.py "$url" smol "$work/score.json" "$context" " joy" " sadness" " anger" " fear"
