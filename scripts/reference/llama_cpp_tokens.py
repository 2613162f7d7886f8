"""Write crates/candor-infer/tests/fixtures/llama_cpp_tokens.json: llama.cpp's own token ids
(llama-cpp-python's `Llama.tokenize` on a vocab-only load, no BOS, no special-token parsing)
for a fixed corpus, for each GGUF given, so that Candor's tokenizers built from the same GGUF
metadata can be checked against the canonical tokenizer of the format.

The corpus: leading and trailing spaces, digits, punctuation, emoji, CJK, newlines, and every
label of the Emotion, IMDB and MASSIVE datasets with and without a leading space, plus, for
label continuations, each label after a prompt ending in "Answer:" (the ids llama.cpp gives
the whole text, which Candor's in-context continuation must reproduce).

Usage (llama-cpp-python from scripts/bench-run.sh's build):
  target/bench-llama/venv/bin/python scripts/reference/llama_cpp_tokens.py \\
      --data-dir ../shared/datasets models/SmolLM2-135M-Instruct.Q4_1.gguf \\
      models/gemma-3-270m-q4_k_m.gguf models/ggml-vocab-llama-spm.gguf
"""

from __future__ import annotations

import argparse
import hashlib
import json
from importlib.metadata import version
from pathlib import Path

from llama_cpp import Llama

FIXED = [
    "Hello world",
    " Hello world",
    "  two leading spaces",
    "trailing space ",
    "Hello\nworld\n\nagain",
    "\ttab and\r\nCRLF",
    "1 12 123 1234 12345 3.14159 0.05 1,000,000",
    '{"joy": 0.7, "sadness": 0.2, "anger": 0.1}',
    "It's, like, (really) good!? -- yes; no: maybe...",
    "naïve café résumé",
    "emoji 😀👍🏽 done",
    "日本語のテキストです。中文文本。",
    "한국어 텍스트",
    "i feel so happy today",
    "<b>bold</b> & <i>italic</i>",
]
PROMPT = "Classify the text.\nText: I lost my keys again.\nAnswer:"
# Longer than Gemma 3's 512-position sliding window (about 700 tokens).
LONG = " ".join(f"Sentence {i}: the quick brown fox jumps over the lazy dog near river {i}." for i in range(42))


def dataset_labels(data_dir: Path) -> list[str]:
    labels: set[str] = set()
    for name in ("emotion", "imdb", "massive_en_us"):
        for path in sorted((data_dir / name).glob("*.jsonl")):
            with path.open(encoding="utf-8-sig") as f:
                labels.update(json.loads(line)["label"] for line in f if line.strip())
    return sorted(labels)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "crates/candor-infer/tests/fixtures/llama_cpp_tokens.json",
    )
    args = parser.parse_args()
    labels = dataset_labels(args.data_dir)
    texts = FIXED + [LONG] + labels + [" " + label for label in labels]
    fixture = {
        "made_by": "scripts/reference/llama_cpp_tokens.py",
        "llama_cpp_python": version("llama_cpp_python"),
        "prompt": PROMPT,
        "long": LONG,
        "models": [],
    }
    for path in args.models:
        llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
        encode = lambda text: llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        prompt_ids = encode(PROMPT)
        continuations = []
        for label in labels:
            whole = encode(PROMPT + " " + label)
            if whole[: len(prompt_ids)] != prompt_ids:
                raise SystemExit(f"{path.name}: the prompt's ids change when ' {label}' follows it")
            continuations.append({"label": " " + label, "ids": whole[len(prompt_ids):]})
        fixture["models"].append(
            {
                "file": path.name,
                "sha256": sha256(path),
                "cases": [{"text": text, "ids": encode(text)} for text in texts],
                "prompt_ids": prompt_ids,
                "continuations": continuations,
            }
        )
    args.out.write_text(json.dumps(fixture, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: {len(texts)} texts, {len(labels)} continuations, {len(args.models)} models")


if __name__ == "__main__":
    main()
