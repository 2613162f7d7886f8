"""Exact float64 reference forward pass of a llama-family GGUF model, in numpy.

This is Candor's yardstick for candor-infer: every weight is dequantized by the `gguf` package
(llama.cpp's own Python reader) and every operation runs in float64 over the whole sequence, with
no KV cache, no batching and no fused kernels, so the only approximation left is the quantization
baked into the file. The Rust forward (f32, cached, batched) is compared against these numbers.

Architecture as llama.cpp runs LLM_ARCH_LLAMA: RMSNorm (eps from metadata), attention with grouped
KV heads and "normal" RoPE on *adjacent* pairs (x[2i], x[2i+1]) -- the GGUF converter permutes the
rows of attn_q/attn_k so that this matches Hugging Face's rotate-half layout --, SwiGLU feed-forward,
final RMSNorm, output projection tied to token_embd when output.weight is absent.

Run as a script it greedy-decodes the chat prompt "What is the capital of France?" as a sanity
check of the reference itself; the expected answer is "The capital of France is Paris."
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

SCRIPT_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPT_DIR))

from tokenizer import GgufBpeTokenizer, render_chat  # noqa: E402


@dataclass(frozen=True)
class Hyper:
    """Architecture hyper-parameters read from the GGUF metadata."""

    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    rope_dims: int
    rope_base: float
    rms_eps: float
    vocab: int


def field(reader: GGUFReader, key: str):
    """The value of one metadata key, or a clear error naming it."""
    if key not in reader.fields:
        raise KeyError(f"GGUF metadata key {key!r} is missing")
    return reader.fields[key].contents()


def read_hyper(reader: GGUFReader) -> Hyper:
    arch = field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"reference forward supports architecture 'llama', file has {arch!r}")
    n_embd = int(field(reader, f"{arch}.embedding_length"))
    n_head = int(field(reader, f"{arch}.attention.head_count"))
    head_dim = n_embd // n_head
    rope_key = f"{arch}.rope.dimension_count"
    return Hyper(
        n_layer=int(field(reader, f"{arch}.block_count")),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=int(field(reader, f"{arch}.attention.head_count_kv")),
        head_dim=head_dim,
        rope_dims=int(field(reader, rope_key)) if rope_key in reader.fields else head_dim,
        rope_base=float(field(reader, f"{arch}.rope.freq_base")),
        # Stored as f32 (9.99999974738e-06); used as stored, like llama.cpp.
        rms_eps=float(field(reader, f"{arch}.attention.layer_norm_rms_epsilon")),
        vocab=len(reader.fields["tokenizer.ggml.tokens"].data),
    )


class ReferenceModel:
    """Float64 weights of a llama GGUF and an uncached, exact forward pass over them."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.reader = GGUFReader(self.path)
        self.hp = read_hyper(self.reader)
        self.weights = {t.name: self._dequantize(t) for t in self.reader.tensors}
        if "output.weight" not in self.weights:
            self.weights["output.weight"] = self.weights["token_embd.weight"]
        self.tokenizer = GgufBpeTokenizer.from_reader(self.reader)
        self.chat_template = field(self.reader, "tokenizer.chat_template")

    @staticmethod
    def _dequantize(tensor) -> np.ndarray:
        # dequantize() returns rows in numpy order: shape (ne1, ne0) = (out_features, in_features).
        values = dequantize(tensor.data, tensor.tensor_type)
        shape = tuple(int(d) for d in reversed(tensor.shape))
        return np.asarray(values, dtype=np.float64).reshape(shape)

    def rms_norm(self, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.hp.rms_eps) * weight

    def rope(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """llama.cpp ROPE_TYPE_NORM: rotate adjacent pairs (2i, 2i+1) by pos * base^(-2i/d)."""
        d = self.hp.rope_dims
        inv_freq = self.hp.rope_base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
        angles = positions[:, None].astype(np.float64) * inv_freq[None, :]  # (T, d/2)
        cos = np.cos(angles)[:, None, :]
        sin = np.sin(angles)[:, None, :]
        out = x.copy()
        even = x[..., 0:d:2]
        odd = x[..., 1:d:2]
        out[..., 0:d:2] = even * cos - odd * sin
        out[..., 1:d:2] = even * sin + odd * cos
        return out

    def attention(self, layer: int, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        hp, w = self.hp, self.weights
        t = x.shape[0]
        prefix = f"blk.{layer}."
        q = (x @ w[prefix + "attn_q.weight"].T).reshape(t, hp.n_head, hp.head_dim)
        k = (x @ w[prefix + "attn_k.weight"].T).reshape(t, hp.n_head_kv, hp.head_dim)
        v = (x @ w[prefix + "attn_v.weight"].T).reshape(t, hp.n_head_kv, hp.head_dim)
        q = self.rope(q, positions)
        k = self.rope(k, positions)
        group = hp.n_head // hp.n_head_kv
        k = np.repeat(k, group, axis=1)  # query head h uses KV head h // group
        v = np.repeat(v, group, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hp.head_dim)
        causal = np.triu(np.ones((t, t), dtype=bool), k=1)
        scores = np.where(causal[None], -np.inf, scores)
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        mixed = np.einsum("hqk,khd->qhd", probs, v).reshape(t, hp.n_head * hp.head_dim)
        return mixed @ w[prefix + "attn_output.weight"].T

    def feed_forward(self, layer: int, x: np.ndarray) -> np.ndarray:
        w = self.weights
        prefix = f"blk.{layer}."
        gate = x @ w[prefix + "ffn_gate.weight"].T
        up = x @ w[prefix + "ffn_up.weight"].T
        silu = gate / (1.0 + np.exp(-gate))
        return (silu * up) @ w[prefix + "ffn_down.weight"].T

    def logits(self, ids: list[int]) -> np.ndarray:
        """Float64 logits, shape (len(ids), vocab): row i predicts the token after ids[i]."""
        if not ids:
            raise ValueError("logits() needs at least one token")
        w = self.weights
        positions = np.arange(len(ids))
        x = w["token_embd.weight"][np.asarray(ids)]
        for layer in range(self.hp.n_layer):
            h = self.rms_norm(x, w[f"blk.{layer}.attn_norm.weight"])
            x = x + self.attention(layer, h, positions)
            h = self.rms_norm(x, w[f"blk.{layer}.ffn_norm.weight"])
            x = x + self.feed_forward(layer, h)
        x = self.rms_norm(x, w["output_norm.weight"])
        return x @ w["output.weight"].T

    def greedy(self, prompt_ids: list[int], max_new: int, stop_ids: set[int]) -> list[int]:
        """Greedy continuation (argmax each step, full recompute), stopping after a stop id."""
        ids = list(prompt_ids)
        out: list[int] = []
        for _ in range(max_new):
            next_id = int(np.argmax(self.logits(ids)[-1]))
            out.append(next_id)
            ids.append(next_id)
            if next_id in stop_ids:
                break
        return out


def log_softmax(row: np.ndarray) -> np.ndarray:
    m = row.max()
    return row - (m + np.log(np.exp(row - m).sum()))


PARIS_MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
PARIS_EXPECTED = "The capital of France is Paris."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_model = SCRIPT_DIR.parents[1] / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    parser.add_argument("--model", default=str(default_model))
    parser.add_argument("--max-new", type=int, default=32)
    args = parser.parse_args()

    model = ReferenceModel(args.model)
    prompt = render_chat(model.chat_template, PARIS_MESSAGES, add_generation_prompt=True)
    prompt_ids = model.tokenizer.encode(prompt)
    eos = model.tokenizer.token_id("<|im_end|>")
    answer = model.greedy(prompt_ids, args.max_new, {eos})
    text = model.tokenizer.decode([i for i in answer if i != eos])
    print(f"prompt tokens: {len(prompt_ids)}")
    print(f"answer ids: {answer}")
    print(f"answer: {text!r}")
    if text.strip() != PARIS_EXPECTED:
        print(f"FAIL: expected {PARIS_EXPECTED!r}", file=sys.stderr)
        return 1
    print("OK: reference forward reproduces the expected greedy answer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
