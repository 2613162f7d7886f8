"""Write crates/candor-infer/tests/fixtures/smollm2_reference.json from the float64 reference.

Everything in the fixture comes from this directory's independent implementations: the numpy
float64 forward (forward.py) and the pure-Python BPE tokenizer + jinja2 chat renderer
(tokenizer.py). The tokenizer is additionally cross-checked here against the `tokenizers` library
configured like the model's original tokenizer.json (Digits + ByteLevel); the script stops if the
two disagree on any case.

Conventions recorded in the fixture (the Rust tests follow them):
* prompts are chat-rendered with add_generation_prompt=True, so they end in
  "<|im_start|>assistant\\n" and the answer position is right after that newline;
* a label's tokens are its text encoded on its own (no leading space, no special tokens) and
  appended directly after the prompt ids;
* label log-prob = sum over the label's tokens of log p(token | prompt + earlier label tokens);
  first-token log-prob = log p(first token | prompt);
  outside mass = 1 - sum of p(t | prompt) over the *distinct* first tokens of the labels.
All log-probs are natural logs of the softmax over the full vocabulary of the float64 logits.

Usage: .venv/bin/python scripts/reference/make_fixtures.py [--model PATH] [--out PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np

SCRIPT_DIR = Path(__file__).resolve().parent
REPO = SCRIPT_DIR.parents[1]
sys.path.insert(0, str(SCRIPT_DIR))

from forward import PARIS_EXPECTED, PARIS_MESSAGES, ReferenceModel, log_softmax  # noqa: E402
from tokenizer import render_chat  # noqa: E402

SCRIPT_VERSION = 1
EMOTION_LABELS = ["anger", "fear", "joy", "love", "sadness", "surprise"]

TOKENIZER_STRINGS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "12345",
    "In 2024, 3.14159 was rounded to 3.",
    " leading space",
    "   three leading spaces",
    "trailing spaces   ",
    "line one\nline two\n\nafter a blank line\n",
    "tabs\tand\r\nCRLF",
    "Wait... what?! (yes) [no] {maybe} #tag @user $5 100%",
    "don't, I'll, we've, she's",
    "café naïve Ünïcödé — “quoted”",
    "emoji 🎉🙂 and CJK 日本語",
    "<|im_start|>user\nHi there<|im_end|>\n",
    "<|im_end|><|im_start|>assistant\n",
    "a<|endoftext|>b",
]

CHAT_CASES = [
    {"messages": [{"role": "user", "content": "What is the capital of France?"}], "add_generation_prompt": True},
    {
        "messages": [
            {"role": "system", "content": "You are a careful classifier."},
            {"role": "user", "content": "Label this: I love it."},
        ],
        "add_generation_prompt": True,
    },
    {
        "messages": [
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Tell me a fact.\nJust one."},
        ],
        "add_generation_prompt": False,
    },
]

EMOTION_TEXTS = [
    ("I can't believe they cancelled my flight again without telling anyone!", None),
    ("Walking home alone in the dark, I kept hearing footsteps behind me.", None),
    ("We won the championship and the whole team was dancing in the rain!", None),
    ("Every morning I wake up grateful that you are in my life.", None),
    ("The house feels so empty since my grandmother passed away.", None),
    ("I opened the door and all my friends jumped out shouting happy birthday.", "You are an emotion classifier."),
]


def emotion_prompt(text: str, labels: list[str]) -> str:
    return (
        "Classify the emotion expressed in the text.\n"
        f"Text: {text}\n"
        f"Answer with exactly one word from: {', '.join(labels)}."
    )


def label_cases() -> list[dict]:
    cases = []
    for i, (text, system) in enumerate(EMOTION_TEXTS):
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": emotion_prompt(text, EMOTION_LABELS)})
        cases.append({"name": f"emotion_{i}", "messages": messages, "labels": EMOTION_LABELS})
    cases.append(
        {
            "name": "multi_token_labels",
            "messages": [
                {
                    "role": "user",
                    "content": "How does this person feel? \"Finally done with exams, off to the beach!\"\n"
                    "Answer with one of: very happy, very sad, not sure, somewhat happy.",
                }
            ],
            # "very happy" and "very sad" share their first token: outside mass counts it once.
            "labels": ["very happy", "very sad", "not sure", "somewhat happy"],
        }
    )
    cases.append(
        {
            "name": "imdb_binary",
            "messages": [
                {
                    "role": "user",
                    "content": "Is the sentiment of this movie review positive or negative?\n"
                    "Review: A tedious plot, wooden acting and a twist you can see coming an hour away.\n"
                    "Answer with one word: positive or negative.",
                }
            ],
            "labels": ["positive", "negative"],
        }
    )
    return cases


def score_labels(model: ReferenceModel, prompt_ids: list[int], labels: list[str]) -> dict:
    """Exact label scores: every label is run as prompt + label through the uncached forward."""
    prompt_logprobs = log_softmax(model.logits(prompt_ids)[-1])
    scored = []
    for label in labels:
        label_ids = model.tokenizer.encode(label)
        logits = model.logits(prompt_ids + label_ids)
        steps = [
            float(log_softmax(logits[len(prompt_ids) - 1 + k])[tok]) for k, tok in enumerate(label_ids)
        ]
        scored.append(
            {
                "label": label,
                "ids": label_ids,
                "logprob": float(np.sum(steps)),
                "first_token_logprob": float(prompt_logprobs[label_ids[0]]),
                "token_logprobs": steps,
            }
        )
        # The first step of the full run and the prompt-only run see the same context.
        assert abs(steps[0] - scored[-1]["first_token_logprob"]) < 1e-9
    first_tokens = sorted({s["ids"][0] for s in scored})
    inside = float(np.sum(np.exp(prompt_logprobs[first_tokens])))
    return {"labels": scored, "distinct_first_tokens": first_tokens, "outside_mass": 1.0 - inside}


def logits_summary(model: ReferenceModel, ids: list[int], top_k: int = 5) -> list[dict]:
    logits = model.logits(ids)
    rows = []
    for position, row in enumerate(logits):
        top = np.argsort(-row, kind="stable")[:top_k]
        m = row.max()
        rows.append(
            {
                "position": position,
                "top_ids": [int(i) for i in top],
                "top_logits": [float(row[i]) for i in top],
                "logsumexp": float(m + np.log(np.exp(row - m).sum())),
            }
        )
    return rows


def cross_check_tokenizer(model: ReferenceModel, strings: list[str]) -> str:
    """Compare the pure-Python tokenizer with the `tokenizers` library on every string."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    merges = [tuple(m.split(" ")) for m in model.reader.fields["tokenizer.ggml.merges"].contents()]
    other = Tokenizer(models.BPE(vocab=model.tokenizer.vocab, merges=merges))
    other.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    other.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in model.tokenizer.control])
    for s in strings:
        ours, theirs = model.tokenizer.encode(s), other.encode(s, add_special_tokens=False).ids
        if ours != theirs:
            raise SystemExit(f"tokenizer disagreement on {s!r}: ours {ours}, tokenizers {theirs}")
    return version("tokenizers")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dump(fixture: dict) -> str:
    """JSON with one case per line: readable diffs, small file."""
    lines = ["{"]
    keys = list(fixture)
    for n, key in enumerate(keys):
        value = fixture[key]
        comma = "," if n + 1 < len(keys) else ""
        if isinstance(value, list):
            lines.append(f" {json.dumps(key)}: [")
            for m, item in enumerate(value):
                sep = "," if m + 1 < len(value) else ""
                lines.append(f"  {json.dumps(item, ensure_ascii=False)}{sep}")
            lines.append(f" ]{comma}")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description="Write the candor-infer reference fixture.")
    parser.add_argument("--model", default=str(REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    parser.add_argument(
        "--out", default=str(REPO / "crates" / "candor-infer" / "tests" / "fixtures" / "smollm2_reference.json")
    )
    args = parser.parse_args()
    model = ReferenceModel(args.model)
    tok = model.tokenizer
    eos = tok.token_id("<|im_end|>")

    tokenizer_cases = []
    for s in TOKENIZER_STRINGS:
        ids = tok.encode(s)
        assert tok.decode(ids) == s, f"decode does not round-trip {s!r}"
        tokenizer_cases.append({"text": s, "ids": ids, "tokens": [tok.tokens[i] for i in ids]})

    chat_cases = [
        dict(case, text=render_chat(model.chat_template, case["messages"], case["add_generation_prompt"]))
        for case in CHAT_CASES
    ]

    scoring, scored_texts = [], []
    for case in label_cases():
        prompt = render_chat(model.chat_template, case["messages"], add_generation_prompt=True)
        scored_texts += [prompt] + case["labels"]
        prompt_ids = tok.encode(prompt)
        result = score_labels(model, prompt_ids, case["labels"])
        scoring.append({"name": case["name"], "messages": case["messages"], "prompt_ids": prompt_ids, **result})
        best = max(result["labels"], key=lambda s: s["logprob"])["label"]
        print(f"{case['name']}: {len(prompt_ids)} prompt tokens, best {best!r}, outside {result['outside_mass']:.4f}")

    paris_prompt = render_chat(model.chat_template, PARIS_MESSAGES, add_generation_prompt=True)
    paris_prompt_ids = tok.encode(paris_prompt)
    paris_ids = model.greedy(paris_prompt_ids, 32, {eos})
    paris_text = tok.decode([i for i in paris_ids if i != eos])
    if paris_text != PARIS_EXPECTED:
        raise SystemExit(f"reference greedy answer is {paris_text!r}, expected {PARIS_EXPECTED!r}")

    logits_ids = paris_prompt_ids + paris_ids
    tokenizers_version = cross_check_tokenizer(
        model, TOKENIZER_STRINGS + [c["text"] for c in chat_cases] + scored_texts + [paris_prompt]
    )

    fixture = {
        "about": "Float64 reference values for candor-infer, written by scripts/reference/make_fixtures.py",
        "provenance": {
            "script_version": SCRIPT_VERSION,
            "model_file": Path(args.model).name,
            "model_sha256": sha256_of(Path(args.model)),
            "numpy": np.__version__,
            "gguf": version("gguf"),
            "tokenizer_cross_check": f"tokenizers {tokenizers_version} (Digits + ByteLevel), identical ids",
        },
        "conventions": {
            "chat_prompts": "rendered with the GGUF chat template, add_generation_prompt=true",
            "label_ids": "label text encoded on its own: no leading space, no special tokens, appended after the prompt ids",
            "logprob": "natural log; sum over the label's tokens of log p(token | prompt + earlier label tokens)",
            "first_token_logprob": "log p(first label token | prompt)",
            "outside_mass": "1 - sum of p(t | prompt) over the distinct first tokens of all labels",
            "logits": "for each position of logits.ids: top-5 token ids and logits, and log-sum-exp of the row",
        },
        "tokenizer": tokenizer_cases,
        "chat": chat_cases,
        "label_scoring": scoring,
        "greedy": [
            {
                "messages": PARIS_MESSAGES,
                "prompt_ids": paris_prompt_ids,
                "answer_ids": paris_ids,
                "answer_text": paris_text,
                "stop_id": eos,
            }
        ],
        "logits_ids": logits_ids,
        "logits": logits_summary(model, logits_ids),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dump(fixture), encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
