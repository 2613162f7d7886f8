#!/usr/bin/env bash
# Candor's served backend against a real llama.cpp `llama-server` (issue 11): builds it once
# (scripts/build-llama-server.sh), serves the default model, runs `candor run --model
# http://… --api llama-server` on the test fixture dataset (both signals, constrained dicts
# through llama-server's json_schema) and the same run on the local model, then compares: the
# forced-decode label log-probs must be within 0.5 nats of Candor's exact ones, and the
# manifest must mark them approximate. Heavy (a C++ build the first time): not part of the
# test command.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
model="${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
data="crates/candor-cli/tests/fixtures/run/data"
work="${WORK:-target/check-llama-server}"
port="${PORT:-8391}"
[[ -f "$model" ]] || scripts/fetch-default-model.sh
server_bin="$(scripts/build-llama-server.sh)"
cargo build --release -p candor-cli --quiet
candor="target/release/candor"
rm -rf "$work" && mkdir -p "$work"

"$server_bin" -m "$model" --host 127.0.0.1 --port "$port" -c 4096 -t "$(nproc)" --no-webui >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 0.5
done
curl -sf "http://127.0.0.1:$port/health" >/dev/null || { echo "llama-server did not start:"; tail -20 "$work/server.log"; exit 1; }

common=(--dataset emotion --data-dir "$data" --verbalized constrained --quiet)
"$candor" run --model "$model" --out "$work/local" "${common[@]}"
"$candor" run --model "http://127.0.0.1:$port" --api llama-server --concurrency 2 --out "$work/served" "${common[@]}"

python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
read = lambda run: [json.loads(line) for line in open(f"{work}/{run}/predictions.jsonl")]
local, served = read("local"), read("served")
assert len(local) == len(served) == 12, (len(local), len(served))
diffs = [abs(a - b) for l, s in zip(local, served) for a, b in zip(l["logits"]["log_probs"], s["logits"]["log_probs"])]
same_top = sum(max(range(6), key=lambda i: l["logits"]["log_probs"][i]) == max(range(6), key=lambda i: s["logits"]["log_probs"][i]) for l, s in zip(local, served))
same_text = sum(l["verbalized"]["raw_text"] == s["verbalized"]["raw_text"] for l, s in zip(local, served))
manifest = json.load(open(f"{work}/served/manifest.json"))
server = manifest["model"]["server"]
print(f"llama-server ({manifest['model']['compute_dtype']}) vs Candor, 12 examples x 6 labels:")
print(f"  label log-prob |difference|: max {max(diffs):.4f}, mean {sum(diffs)/len(diffs):.4f} nats")
print(f"  same top label: {same_top}/12; same constrained dict text: {same_text}/12")
print(f"  manifest: engine {server['engine']}, log_probs {server['log_probs']!r}")
assert max(diffs) <= 0.5, "llama-server's label log-probs are more than 0.5 nats from Candor's"
assert server["log_probs"].startswith("approximate"), server
assert all(r["backend"] == "llama-server" for r in served)
print("ok")
PY
