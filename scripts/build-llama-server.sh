#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` once into target/llama-server/ from the llama.cpp that the
# llama-cpp-python sdist vendors (the Python package index is the only network this project
# may use), with cmake from the same index. Prints the binary's path. ~10-15 minutes on 2 cores;
# used by scripts/check-llama-server.sh, never by the test command.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
dir="$root/target/llama-server"
binary="$dir/build/bin/llama-server"
if [[ -x "$binary" ]]; then
  echo "$binary"
  exit 0
fi
mkdir -p "$dir"
if [[ ! -x "$dir/venv/bin/cmake" ]]; then
  python3 -m venv "$dir/venv"
  "$dir/venv/bin/pip" install --quiet cmake >&2
fi
sdist="$dir/llama_cpp_python-$version.tar.gz"
[[ -f "$sdist" ]] || python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python \
  "llama-cpp-python==$version" -d "$dir" >&2
rm -rf "$dir/src" && mkdir -p "$dir/src"
tar -xzf "$sdist" -C "$dir/src" --strip-components=3 "llama_cpp_python-$version/vendor/llama.cpp"
threads="$(nproc)"
# ggml's CPU feature switches for what this CPU has. Not GGML_NATIVE: -march=native turns on
# ggml's AMX kernels where the CPU lists AMX, and they crash (SIGSEGV) in virtual machines that
# do not grant the AMX tile state (as scripts/bench-run.sh found).
flags=()
for pair in avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx512f:AVX512 avx512vbmi:AVX512_VBMI \
  avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16 avx_vnni:AVX_VNNI; do
  grep -qw "${pair%%:*}" /proc/cpuinfo && flags+=("-DGGML_${pair##*:}=ON")
done
"$dir/venv/bin/cmake" -S "$dir/src" -B "$dir/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF "${flags[@]}" \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON >&2
"$dir/venv/bin/cmake" --build "$dir/build" --target llama-server -j "$threads" >&2
echo "$binary"
