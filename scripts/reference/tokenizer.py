"""An independent tokenizer and chat renderer for GGUF byte-level BPE models, in pure Python.

Written from the published definitions, not from any library's BPE code, so that Candor's Rust
tokenizer (built on the `tokenizers` crate) is checked against a second implementation:

* vocabulary, merges and control tokens come from the GGUF metadata (`tokenizer.ggml.*`);
* control tokens (token_type 3, e.g. `<|im_start|>`) are matched literally in the text first,
  longest first, and never split;
* the `smollm` pre-tokenizer (llama.cpp `LLAMA_VOCAB_PRE_TYPE_SMOLLM`, Hugging Face
  `Sequence[Digits(individual_digits), ByteLevel(add_prefix_space=false)]`) isolates every digit,
  then splits with the GPT-2 regex; no prefix space is added;
* each piece is mapped to GPT-2's byte-to-unicode alphabet and merged by merge rank.

`render_chat` renders a message list with the model's own Jinja chat template, using jinja2 with
the settings Hugging Face uses (trim_blocks, lstrip_blocks).
"""

from __future__ import annotations

import regex
import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

GPT2_SPLIT = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
DIGIT_SPLIT = regex.compile(r"\p{N}|[^\p{N}]+")
CONTROL_TOKEN_TYPE = 3
SUPPORTED_PRE_TOKENIZERS = ("smollm",)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


class GgufBpeTokenizer:
    """Byte-level BPE over a GGUF vocabulary with the `smollm` pre-tokenizer."""

    def __init__(self, tokens: list[str], merges: list[str], token_types: list[int], pre: str):
        if pre not in SUPPORTED_PRE_TOKENIZERS:
            raise ValueError(f"pre-tokenizer {pre!r} not supported; supported: {SUPPORTED_PRE_TOKENIZERS}")
        self.tokens = tokens
        self.vocab = {tok: i for i, tok in enumerate(tokens)}
        self.ranks = {tuple(m.split(" ")): rank for rank, m in enumerate(merges)}
        self.control = sorted(
            (tok for tok, kind in zip(tokens, token_types) if kind == CONTROL_TOKEN_TYPE),
            key=len,
            reverse=True,
        )
        self.control_split = regex.compile("(" + "|".join(regex.escape(t) for t in self.control) + ")")
        self.byte_to_char = bytes_to_unicode()
        self.char_to_byte = {c: b for b, c in self.byte_to_char.items()}

    @classmethod
    def from_reader(cls, reader) -> "GgufBpeTokenizer":
        fields = reader.fields
        if fields["tokenizer.ggml.model"].contents() != "gpt2":
            raise ValueError("only byte-level BPE ('gpt2') GGUF tokenizers are supported")
        return cls(
            tokens=list(fields["tokenizer.ggml.tokens"].contents()),
            merges=list(fields["tokenizer.ggml.merges"].contents()),
            token_types=list(fields["tokenizer.ggml.token_type"].contents()),
            pre=fields["tokenizer.ggml.pre"].contents(),
        )

    def token_id(self, token: str) -> int:
        return self.vocab[token]

    def pre_tokenize(self, text: str) -> list[str]:
        pieces = []
        for chunk in DIGIT_SPLIT.findall(text):
            pieces.extend(GPT2_SPLIT.findall(chunk))
        return pieces

    def bpe(self, piece: str) -> list[str]:
        symbols = [self.byte_to_char[b] for b in piece.encode("utf-8")]
        while len(symbols) > 1:
            pairs = [(self.ranks.get((a, b)), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))]
            ranked = [(r, i) for r, i in pairs if r is not None]
            if not ranked:
                break
            best = min(ranked)[0]
            first, second = next((symbols[i], symbols[i + 1]) for r, i in ranked if r == best)
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; control tokens written in the text become their single id."""
        ids: list[int] = []
        for part in self.control_split.split(text):
            if not part:
                continue
            if part in self.control:
                ids.append(self.vocab[part])
                continue
            for piece in self.pre_tokenize(part):
                ids.extend(self.vocab[symbol] for symbol in self.bpe(piece))
        return ids

    def decode(self, ids: list[int]) -> str:
        """Text of `ids`, control tokens included as written."""
        out = bytearray()
        for i in ids:
            token = self.tokens[i]
            if token in self.control:
                out.extend(token.encode("utf-8"))
            else:
                out.extend(self.char_to_byte[c] for c in token)
        return out.decode("utf-8", errors="replace")


def render_chat(template: str, messages: list[dict], add_generation_prompt: bool) -> str:
    """Render `messages` with the model's Jinja chat template as Hugging Face does."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt)
