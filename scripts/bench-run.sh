#!/usr/bin/env bash
# Whole-run speed of Candor against a llama.cpp pipeline doing the same work (issue 9):
# `candor run --verbalized constrained` (constrained dict + label log-probs) and
# scripts/bench/llama_cpp_pipeline.py (llama-cpp-python: prompt-prefix cache, GBNF dict
# grammar, label log-probs from the logits) on the same examples with the same prompt texts
# (`candor run --print-prompts`), both as whole processes, plus each engine's prefill and
# decode tok/s, Candor's batched decode, peak RSS, and how far llama.cpp's label log-probs are
# from Candor's exact ones.
#
#   scripts/bench-run.sh [DATA_DIR]        # default ../shared/datasets
#   EMOTION_LIMIT=24 MASSIVE_LIMIT=4 WEIGHTS=auto scripts/bench-run.sh
#
# llama.cpp comes from the llama-cpp-python sdist on the Python package index (it vendors a
# current llama.cpp), built once into target/bench-llama/venv (~15 minutes on 2 cores) and
# reused. Figures mean something only on an idle machine: the script refuses to start while a
# compiler runs (BENCH_FORCE=1 overrides). Not part of the test command.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
data_dir="$(cd "${1:-$root/../shared/datasets}" && pwd)"
emotion_limit="${EMOTION_LIMIT:-24}"
massive_limit="${MASSIVE_LIMIT:-4}"
weights="${WEIGHTS:-auto}"
threads="$(nproc)"
llama_dir="$root/target/bench-llama"
llama_version="0.3.36"
work="$root/target/bench-run"

scripts/fetch-default-model.sh >/dev/null
model="$root/models/SmolLM2-135M-Instruct.Q4_1.gguf"
# Two builds: with `--example`, cargo builds only that example, not the `candor` binary.
cargo build --release --locked -p candor-cli
cargo build --release --locked -p candor-infer --example bench_infer
candor="$root/target/release/candor"

# ggml's CPU feature switches for what this CPU has. Not GGML_NATIVE: -march=native turns on
# ggml's AMX kernels where the CPU lists AMX, and they crash (SIGSEGV in ggml_backend_amx_mul_mat)
# in virtual machines that do not grant the AMX tile state.
ggml_cpu_flags() {
  local flags="" feature option
  for pair in avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx512f:AVX512 avx512vbmi:AVX512_VBMI \
    avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16 avx_vnni:AVX_VNNI; do
    feature="${pair%%:*}" option="${pair##*:}"
    grep -qw "$feature" /proc/cpuinfo && flags+=" -DGGML_$option=ON"
  done
  echo "$flags"
}

if [[ ! -x "$llama_dir/venv/bin/python" ]] || ! "$llama_dir/venv/bin/python" -c "import llama_cpp" 2>/dev/null; then
  echo "== building llama-cpp-python $llama_version (llama.cpp) into $llama_dir/venv, once"
  mkdir -p "$llama_dir"
  python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$llama_version" -d "$llama_dir"
  python3 -m venv "$llama_dir/venv"
  CMAKE_ARGS="-DGGML_NATIVE=OFF$(ggml_cpu_flags) -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL="$threads" \
    "$llama_dir/venv/bin/pip" install --quiet "$llama_dir/llama_cpp_python-$llama_version.tar.gz"
fi
python="$llama_dir/venv/bin/python"
pipeline="$root/scripts/bench/llama_cpp_pipeline.py"

compiler_running() { pgrep -x rustc >/dev/null || pgrep -x cc1plus >/dev/null || pgrep -x cc1 >/dev/null; }
if compiler_running && [[ "${BENCH_FORCE:-0}" != 1 ]]; then
  echo "error: a compiler is running; benchmark figures would be meaningless (BENCH_FORCE=1 to override)" >&2
  exit 1
fi
export RAYON_NUM_THREADS="$threads"
rm -rf "$work" && mkdir -p "$work"

# Runs a command with its output in $work/$1.log and "SECONDS PEAK_KIB" in $work/$1.time.
timed() {
  local name="$1"; shift
  /usr/bin/time -f "%e %M" -o "$work/$name.time" "$@" >"$work/$name.log" 2>&1 \
    || { echo "error: $name failed, see $work/$name.log" >&2; tail -5 "$work/$name.log" >&2; exit 1; }
}

echo "machine: $(nproc) cores, RAYON_NUM_THREADS=$threads, candor --weights $weights, llama.cpp threads $threads"
echo
echo "| run | examples | candor s | candor ex/s | llama.cpp s | llama.cpp ex/s | candor / llama.cpp | peak RSS candor / llama.cpp MiB | label log-prob max abs diff (nats) | top label differs |"
echo "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"
for spec in "emotion:$emotion_limit" "massive:$massive_limit"; do
  dataset="${spec%%:*}" limit="${spec##*:}"
  args=(--dataset "$dataset" --data-dir "$data_dir" --split test --limit "$limit" --verbalized constrained --weights "$weights")
  timed "candor-$dataset" "$candor" run "${args[@]}" --out "$work/candor-$dataset" --quiet
  read -r candor_s candor_kib <"$work/candor-$dataset.time"
  "$candor" run "${args[@]}" --print-prompts >"$work/prompts-$dataset.jsonl" 2>"$work/prompts-$dataset.log"
  jq -c .dataset.labels "$work/candor-$dataset/manifest.json" >"$work/labels-$dataset.json"
  timed "llama-$dataset" "$python" "$pipeline" --model "$model" --threads "$threads" \
    --prompts "$work/prompts-$dataset.jsonl" --labels "$work/labels-$dataset.json" --out "$work/llama-$dataset.jsonl"
  read -r llama_s llama_kib <"$work/llama-$dataset.time"
  comparison="$("$python" - "$work/candor-$dataset/predictions.jsonl" "$work/llama-$dataset.jsonl" <<'PY'
import json, sys
candor = {r["id"]: r["logits"]["log_probs"] for r in map(json.loads, open(sys.argv[1]))}
llama = {r["id"]: r["log_probs"] for r in map(json.loads, open(sys.argv[2]))}
diff = max(abs(a - b) for i in candor for a, b in zip(candor[i], llama[i]))
argmax = lambda v: max(range(len(v)), key=v.__getitem__)
flips = sum(argmax(candor[i]) != argmax(llama[i]) for i in candor)
print(f"{diff:.3f} | {flips} of {len(candor)}")
PY
)"
  awk -v d="$dataset" -v n="$limit" -v cs="$candor_s" -v ck="$candor_kib" -v ls="$llama_s" -v lk="$llama_kib" -v c="$comparison" \
    'BEGIN { printf "| %s test | %d | %.1f | %.2f | %.1f | %.2f | %.2fx | %.0f / %.0f | %s |\n", d, n, cs, n / cs, ls, n / ls, ls / cs, ck / 1024, lk / 1024, c }'
done

echo
echo "llama.cpp (llama-cpp-python $llama_version, $threads threads), same model file:"
"$python" "$pipeline" --model "$model" --threads "$threads" --speed
echo
echo "candor (the scripts/bench-infer.sh tables: prefill, decode, batched decode, label scoring, constrained; weight storages):"
"$root/target/release/examples/bench_infer" "$model" --examples 6 2>/dev/null | grep -E '^\|'
