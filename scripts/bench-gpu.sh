#!/usr/bin/env bash
# GPU figures for the speed issue (issue 9, item 7): the same `candor run`s as
# scripts/bench-run.sh (constrained dict + label log-probs on Emotion and MASSIVE test
# examples) on the GPU and on the CPU of the same machine, in the same call, with wall time,
# examples/s, the GPU / CPU ratio and how far the GPU's label log-probs are from the CPU's.
#
#   scripts/bench-gpu.sh [DATA_DIR]                  # default ../shared/datasets
#   EMOTION_LIMIT=96 MASSIVE_LIMIT=16 DEVICE=cuda:0 scripts/bench-gpu.sh
#
# Builds `candor` with `--features cuda` (needs the CUDA toolkit: nvcc and the driver). With
# DEVICE=cpu and FEATURES= it runs the same comparison CPU against CPU, which checks the
# script itself on a machine without a GPU. Not part of the test command.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
data_dir="$(cd "${1:-$root/../shared/datasets}" && pwd)"
emotion_limit="${EMOTION_LIMIT:-48}"
massive_limit="${MASSIVE_LIMIT:-8}"
device="${DEVICE:-cuda}"
features="${FEATURES-cuda}"
work="$root/target/bench-gpu"

scripts/fetch-default-model.sh >/dev/null
cargo build --release --locked -p candor-cli ${features:+--features "$features"}
candor="$root/target/release/candor"
rm -rf "$work" && mkdir -p "$work"

if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
echo "host: $(nproc) cores; candor on --device $device against --device cpu (RAYON_NUM_THREADS=$(nproc))"
echo
echo "| run | examples | $device s | cpu s | $device ex/s | cpu ex/s | $device / cpu | label log-prob max abs diff (nats) | top label differs |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for spec in "emotion:$emotion_limit" "massive:$massive_limit"; do
  dataset="${spec%%:*}" limit="${spec##*:}"
  args=(--dataset "$dataset" --data-dir "$data_dir" --split test --limit "$limit" --verbalized constrained)
  for side in accel cpu; do
    target="$device" && [[ "$side" == cpu ]] && target=cpu
    name="$dataset-$side"
    /usr/bin/time -f "%e" -o "$work/$name.time" \
      "$candor" run "${args[@]}" --device "$target" --out "$work/$name" --quiet >"$work/$name.log" 2>&1 \
      || { echo "error: candor run on $target failed, see $work/$name.log" >&2; tail -5 "$work/$name.log" >&2; exit 1; }
  done
  accel_s="$(cat "$work/$dataset-accel.time")"
  cpu_s="$(cat "$work/$dataset-cpu.time")"
  comparison="$(python3 - "$work/$dataset-accel/predictions.jsonl" "$work/$dataset-cpu/predictions.jsonl" <<'PY'
import json, sys
load = lambda path: {r["id"]: r["logits"]["log_probs"] for r in map(json.loads, open(path))}
accel, cpu = load(sys.argv[1]), load(sys.argv[2])
diff = max(abs(a - b) for i in cpu for a, b in zip(accel[i], cpu[i]))
argmax = lambda v: max(range(len(v)), key=v.__getitem__)
flips = sum(argmax(accel[i]) != argmax(cpu[i]) for i in cpu)
print(f"{diff:.2e} | {flips} of {len(cpu)}")
PY
)"
  awk -v d="$dataset" -v n="$limit" -v a="$accel_s" -v c="$cpu_s" -v cmp="$comparison" \
    'BEGIN { printf "| %s test | %d | %.1f | %.1f | %.2f | %.2f | %.2fx | %s |\n", d, n, a, c, n / a, n / c, c / a, cmp }'
done
