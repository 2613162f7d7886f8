"""lm-evaluation-harness's `local-completions` loglikelihood request against a server, with the
harness's own arithmetic (lm_eval/models/openai_completions.py: `echo: true, max_tokens: 1,
logprobs: 1`, the prompt as token ids, then `sum(token_logprobs[ctxlen:-1])` and the greedy
check against `top_logprobs`), compared with `candor score --json` on the same context and
labels. Standard library only (urllib); no harness install needed.

usage: lm_eval_shape.py URL MODEL_NAME CANDOR_SCORE_JSON CONTEXT LABEL [LABEL ...]
"""
import json
import sys
import urllib.request


def post(url, body):
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as answer:
        return json.load(answer)


def main():
    url, model, score_file, context, *labels = sys.argv[1:]
    base = url.rstrip("/").removesuffix("/v1")
    exact = {entry["label"]: entry["log_prob"] for entry in json.load(open(score_file))["labels"]}
    ctx = post(f"{base}/tokenize", {"model": model, "prompt": context, "add_special_tokens": False})["tokens"]
    worst = 0.0
    for label in labels:
        whole = post(f"{base}/tokenize", {"model": model, "prompt": context + label, "add_special_tokens": False})["tokens"]
        answer = post(f"{base}/v1/completions", {"model": model, "prompt": [whole], "max_tokens": 1, "temperature": 0,
                                                 "logprobs": 1, "echo": True, "seed": 1234})
        choice = sorted(answer["choices"], key=lambda c: c["index"])[0]
        token_logprobs = choice["logprobs"]["token_logprobs"][len(ctx):-1]
        top_logprobs = choice["logprobs"]["top_logprobs"][len(ctx):-1]
        harness = sum(token_logprobs)
        is_greedy = all(tok >= max(top.values()) - 1e-12 for tok, top in zip(token_logprobs, top_logprobs))
        worst = max(worst, abs(harness - exact[label]))
        print(f"{label!r}: harness {harness:.6f}  candor score {exact[label]:.6f}  greedy {is_greedy}")
    print(f"largest difference: {worst:.2e} nats")
    if worst > 1e-4:
        sys.exit("the harness's log-likelihoods differ from Candor's exact ones")


if __name__ == "__main__":
    main()
