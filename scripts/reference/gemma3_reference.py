"""Float64 reference forward of a Gemma 3 GGUF in numpy, and the fixture
crates/candor-infer/tests/fixtures/gemma3_reference.json made from it.

Independent of Candor: weights dequantized by the `gguf` package (llama.cpp's Python reader),
every operation in float64 over the whole sequence, no cache. The architecture as llama.cpp runs
LLM_ARCH_GEMMA3 on a GGUF (whose norm weights already hold Gemma's `1 + w`):
  x = token_embd[ids] * sqrt(n_embd)
  per layer: h = rms(x) * attn_norm; q, k, v projections; q and k RMS-normed per head
  (attn_q_norm, attn_k_norm); NEOX rope (x[i] with x[i + d/2]) with base 10000 on local layers
  and the file's freq_base on every sixth (global) layer; scores scaled by 1/sqrt(head_dim),
  causal, local layers see at most `sliding_window` positions back; the attention output
  RMS-normed (post_attention_norm) before the residual add; then h = rms(x) * ffn_norm,
  down(gelu_tanh(gate(h)) * up(h)) RMS-normed (post_ffw_norm) before the residual add.
  Final rms(x) * output_norm, logits against token_embd (tied).

Token ids come from llama.cpp's tokenizer (tests/fixtures/llama_cpp_tokens.json, made by
llama_cpp_tokens.py), BOS in front as the file asks (tokenizer.ggml.add_bos_token).

The fixture holds, per prompt and position, the logsumexp of the logits, the 10 largest
logits with their ids and the logits of a fixed set of ids; the log-prob of each label
continuation after the classification prompt; a 32-token greedy continuation; and, for a
~700-token prompt (past the 512-position window of the local layers), the positions from 660 on
and an 8-token greedy continuation.

Usage: .venv/bin/python scripts/reference/gemma3_reference.py [--model PATH] [--out PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "crates/candor-infer/tests/fixtures"
GLOBAL_PERIOD = 6
LOCAL_ROPE_BASE = 10000.0
PROMPT_TEXTS = ["i feel so happy today", "Hello world"]
LABELS = [" joy", " sadness", " anger", " fear", " love", " surprise", " positive", " negative"]
FIXED_IDS = [0, 1, 2, 3, 100, 1000, 10000, 100000, 262143]
GREEDY_TOKENS = 32
LONG_FROM = 660
LONG_GREEDY_TOKENS = 8


def field(reader: GGUFReader, key: str):
    return reader.fields[key].contents()


class Gemma3:
    def __init__(self, path: Path):
        reader = GGUFReader(path)
        if field(reader, "general.architecture") != "gemma3":
            raise SystemExit(f"{path} is not a gemma3 GGUF")
        a = "gemma3"
        self.n_layer = int(field(reader, f"{a}.block_count"))
        self.n_embd = int(field(reader, f"{a}.embedding_length"))
        self.n_head = int(field(reader, f"{a}.attention.head_count"))
        self.n_head_kv = int(field(reader, f"{a}.attention.head_count_kv"))
        self.head_dim = int(field(reader, f"{a}.attention.key_length"))
        self.rope_base = float(field(reader, f"{a}.rope.freq_base"))
        self.eps = float(field(reader, f"{a}.attention.layer_norm_rms_epsilon"))
        self.window = int(field(reader, f"{a}.attention.sliding_window"))
        self.bos = int(field(reader, "tokenizer.ggml.bos_token_id"))
        self.w = {}
        for t in reader.tensors:
            values = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float64)
            self.w[t.name] = values.reshape(tuple(int(d) for d in reversed(t.shape)))

    def rms(self, x, weight):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * weight

    def rope(self, x, positions, base):
        d = self.head_dim
        inv_freq = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
        angles = positions[:, None] * inv_freq[None, :]
        cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
        first, second = x[..., : d // 2], x[..., d // 2 :]
        return np.concatenate([first * cos - second * sin, first * sin + second * cos], axis=-1)

    def logits(self, ids: list[int], last_only: bool = False) -> np.ndarray:
        w, t = self.w, len(ids)
        positions = np.arange(t, dtype=np.float64)
        x = w["token_embd.weight"][np.asarray(ids)] * np.sqrt(self.n_embd)
        for layer in range(self.n_layer):
            p = f"blk.{layer}."
            local = (layer + 1) % GLOBAL_PERIOD != 0
            h = self.rms(x, w[p + "attn_norm.weight"])
            q = (h @ w[p + "attn_q.weight"].T).reshape(t, self.n_head, self.head_dim)
            k = (h @ w[p + "attn_k.weight"].T).reshape(t, self.n_head_kv, self.head_dim)
            v = (h @ w[p + "attn_v.weight"].T).reshape(t, self.n_head_kv, self.head_dim)
            q = self.rms(q, w[p + "attn_q_norm.weight"])
            k = self.rms(k, w[p + "attn_k_norm.weight"])
            base = LOCAL_ROPE_BASE if local else self.rope_base
            q, k = self.rope(q, positions, base), self.rope(k, positions, base)
            group = self.n_head // self.n_head_kv
            k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
            scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(self.head_dim)
            qi, ki = np.arange(t)[:, None], np.arange(t)[None, :]
            hidden = ki > qi
            if local:
                hidden |= qi - ki >= self.window
            scores = np.where(hidden[None], -np.inf, scores)
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            mixed = np.einsum("hqk,khd->qhd", probs, v).reshape(t, self.n_head * self.head_dim)
            attn = mixed @ w[p + "attn_output.weight"].T
            x = x + self.rms(attn, w[p + "post_attention_norm.weight"])
            h = self.rms(x, w[p + "ffn_norm.weight"])
            gate, up = h @ w[p + "ffn_gate.weight"].T, h @ w[p + "ffn_up.weight"].T
            gelu = 0.5 * gate * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (gate + 0.044715 * gate**3)))
            ffn = (gelu * up) @ w[p + "ffn_down.weight"].T
            x = x + self.rms(ffn, w[p + "post_ffw_norm.weight"])
        if last_only:
            x = x[-1:]
        x = self.rms(x, w["output_norm.weight"])
        return x @ w["token_embd.weight"].T


def logsumexp(row: np.ndarray) -> float:
    m = row.max()
    return float(m + np.log(np.exp(row - m).sum()))


def position_summary(row: np.ndarray) -> dict:
    top = np.argsort(-row)[:10]
    return {
        "logsumexp": logsumexp(row),
        "top_ids": [int(i) for i in top],
        "top_logits": [float(row[i]) for i in top],
        "fixed_logits": [float(row[i]) for i in FIXED_IDS],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=ROOT / "models/gemma-3-270m-q4_k_m.gguf")
    parser.add_argument("--out", type=Path, default=FIXTURES / "gemma3_reference.json")
    args = parser.parse_args()
    tokens = json.loads((FIXTURES / "llama_cpp_tokens.json").read_text(encoding="utf-8"))
    gemma = next(m for m in tokens["models"] if m["file"] == args.model.name)
    model = Gemma3(args.model)
    by_text = {case["text"]: case["ids"] for case in gemma["cases"]}
    prompts = [(text, [model.bos] + by_text[text]) for text in PROMPT_TEXTS]
    prompts.append((tokens["prompt"], [model.bos] + gemma["prompt_ids"]))
    fixture = {
        "made_by": "scripts/reference/gemma3_reference.py",
        "model": args.model.name,
        "sha256": hashlib.sha256(args.model.read_bytes()).hexdigest(),
        "fixed_ids": FIXED_IDS,
        "prompts": [],
    }
    for text, ids in prompts:
        logits = model.logits(ids)
        fixture["prompts"].append(
            {"text": text, "ids": ids, "positions": [position_summary(row) for row in logits]}
        )
        print(f"{text!r}: {len(ids)} tokens, next {int(np.argmax(logits[-1]))}")
    classification = prompts[-1][1]
    continuations = {c["label"]: c["ids"] for c in gemma["continuations"]}
    labels = []
    for label in LABELS:
        ids = continuations[label]
        logits = model.logits(classification + ids[:-1])
        rows = logits[len(classification) - 1 :]
        log_prob = sum(float(row[i] - logsumexp(row)) for row, i in zip(rows, ids))
        labels.append({"label": label, "ids": ids, "log_prob": log_prob})
    fixture["labels"] = labels
    greedy, context = [], list(prompts[0][1])
    for _ in range(GREEDY_TOKENS):
        next_id = int(np.argmax(model.logits(context, last_only=True)[-1]))
        greedy.append(next_id)
        context.append(next_id)
    fixture["greedy"] = {"prompt": PROMPT_TEXTS[0], "ids": greedy}
    long_ids = [model.bos] + by_text[tokens["long"]]
    logits = model.logits(long_ids)
    long_greedy, context = [], list(long_ids)
    for _ in range(LONG_GREEDY_TOKENS):
        next_id = int(np.argmax(model.logits(context, last_only=True)[-1]))
        long_greedy.append(next_id)
        context.append(next_id)
    fixture["long"] = {
        "ids": long_ids,
        "positions_from": LONG_FROM,
        "positions": [position_summary(row) for row in logits[LONG_FROM:]],
        "greedy": long_greedy,
    }
    print(f"long prompt: {len(long_ids)} tokens")
    args.out.write_text(json.dumps(fixture, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
