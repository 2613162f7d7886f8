#!/usr/bin/env python3
"""The llama.cpp pipeline that scripts/bench-run.sh times against `candor run`.

It does the work of `candor run --verbalized constrained` on the same examples with the same
prompt texts (from `candor run --print-prompts`), the way a llama.cpp user would with
llama-cpp-python: one context, its prompt-prefix cache (a prompt that starts like the previous
one only evaluates the new tokens), greedy decoding under a GBNF grammar that forces the dict
skeleton and the number grammar Candor uses, and label log-probs read from the logits after the
prompt (first token) and after each label token (one evaluation per further token). Verbalized
prompts run first, then label prompts, so each pass keeps its shared prefix cached.

Writes one JSON line per example (id, dict text, label log-probs) to --out and prints
`examples=N seconds=S` (model work only, load excluded) on stdout.

    llama_cpp_pipeline.py --model M.gguf --prompts P.jsonl --labels L.json --out O.jsonl
    llama_cpp_pipeline.py --model M.gguf --speed       # prefill / decode tok/s
"""

import argparse
import json
import math
import sys
import time

import llama_cpp
import numpy as np
from llama_cpp import Llama, LlamaGrammar


def number_rule(max_fraction_digits):
    """Candor's number grammar: 0, 1, 0.d{1,n}, 1.0{1,n}."""
    digits = " ".join(['[0-9]'] + ['[0-9]?'] * (max_fraction_digits - 1))
    zeros = " ".join(['"0"'] + ['"0"?'] * (max_fraction_digits - 1))
    return f'num ::= "0" | "1" | "0." {digits} | "1." {zeros}'


def dict_grammar(labels, max_fraction_digits):
    """GBNF for `{"a": num, "b": num, ...}`: every label once, in order, nothing else."""
    pairs = []
    for i, label in enumerate(labels):
        key = json.dumps(json.dumps(label))  # a JSON string, quoted again as a GBNF literal
        pairs.append(f'{key} ": " num' if i == 0 else f'", " {key} ": " num')
    root = 'root ::= "{" ' + " ".join(pairs) + ' "}"'
    return root + "\n" + number_rule(max_fraction_digits) + "\n"


def log_softmax_at(logits, token):
    row = logits.astype(np.float64)
    peak = row.max()
    return float(row[token] - peak - math.log(np.exp(row - peak).sum()))


class Pipeline:
    def __init__(self, model, threads, context):
        self.llm = Llama(model_path=model, n_ctx=context, n_threads=threads, n_threads_batch=threads,
                         n_batch=512, logits_all=False, verbose=False)

    def tokens(self, text):
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def evaluate(self, tokens):
        """Evaluate `tokens` reusing the cached prefix; returns the last position's logits."""
        llm = self.llm
        cached = list(llm.input_ids[: llm.n_tokens])
        common = 0
        while common < min(len(cached), len(tokens) - 1) and cached[common] == tokens[common]:
            common += 1
        llm.n_tokens = common
        llm.eval(tokens[common:])
        return self.last_logits()

    def last_logits(self):
        """The logits after the last evaluated token (with logits_all off, the only ones kept)."""
        pointer = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.llm.n_vocab(),)).copy()

    def label_log_probs(self, prompt, continuations):
        prompt_ids = self.tokens(prompt)
        first = self.evaluate(prompt_ids)
        scores = []
        for continuation in continuations:
            ids = self.llm.tokenize(continuation.encode("utf-8"), add_bos=False, special=False)
            total = log_softmax_at(first, ids[0])
            for i in range(1, len(ids)):
                total += log_softmax_at(self.evaluate(prompt_ids + ids[:i]), ids[i])
            scores.append(total)
        return scores

    def verbalized(self, prompt, grammar, max_tokens):
        out = self.llm.create_completion(self.tokens(prompt), max_tokens=max_tokens, temperature=0.0,
                                         top_k=1, grammar=grammar)
        return out["choices"][0]["text"]


def run(args):
    examples = [json.loads(line) for line in open(args.prompts, encoding="utf-8")]
    labels = json.load(open(args.labels, encoding="utf-8"))
    pipeline = Pipeline(args.model, args.threads, args.context)
    grammar = LlamaGrammar.from_string(dict_grammar(labels, args.max_fraction_digits), verbose=False)
    started = time.perf_counter()
    dicts = [pipeline.verbalized(e["verbalized"], grammar, args.max_tokens) for e in examples]
    scores = [pipeline.label_log_probs(e["label"], e["label_continuations"]) for e in examples]
    seconds = time.perf_counter() - started
    with open(args.out, "w", encoding="utf-8") as out:
        for example, text, log_probs in zip(examples, dicts, scores):
            out.write(json.dumps({"id": example["id"], "dict": text, "log_probs": log_probs}) + "\n")
    print(f"examples={len(examples)} seconds={seconds:.3f}")


def speed(args):
    """Prefill tok/s of a ~200-token prompt and greedy decode tok/s over 64 steps."""
    pipeline = Pipeline(args.model, args.threads, args.context)
    llm = pipeline.llm
    prompt = pipeline.tokens(" ".join(["The quick brown fox jumps over the lazy dog."] * 20))[:200]
    best_prefill, best_decode = 0.0, 0.0
    for _ in range(3):
        llm.reset()
        started = time.perf_counter()
        llm.eval(prompt)
        best_prefill = max(best_prefill, len(prompt) / (time.perf_counter() - started))
        started = time.perf_counter()
        for _ in range(64):
            llm.eval([int(pipeline.last_logits().argmax())])
        best_decode = max(best_decode, 64 / (time.perf_counter() - started))
    print(f"prefill_tok_s={best_prefill:.1f} decode_tok_s={best_decode:.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompts")
    parser.add_argument("--labels")
    parser.add_argument("--out")
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--max-fraction-digits", type=int, default=3)
    args = parser.parse_args()
    if args.speed:
        speed(args)
    elif args.prompts and args.labels and args.out:
        run(args)
    else:
        parser.error("--prompts, --labels and --out (or --speed) are required")


if __name__ == "__main__":
    sys.exit(main())
