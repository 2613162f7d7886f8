"""Validate demo_emotion.jsonl: schema, counts, unique ids/texts, word counts, near-duplicates.

Usage: python3 check_demo.py [path]   (exits non-zero and names the problem on failure)
"""
import itertools
import json
import re
import sys
from collections import Counter
from pathlib import Path

LABELS = ("anger", "fear", "joy", "love", "sadness", "surprise")
PER_LABEL = 50
MIN_WORDS, MAX_WORDS = 6, 30
MAX_JACCARD = 0.6  # word-set overlap above this counts as a near-duplicate


def words(text):
    return re.findall(r"[a-z0-9']+", text.lower())


def check(path):
    errors = []
    rows = []
    for number, line in enumerate(path.read_text(encoding="ascii").splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            errors.append(f"line {number}: invalid JSON ({err})")
            continue
        if set(row) != {"id", "text", "label"}:
            errors.append(f"line {number}: keys {sorted(row)} != ['id', 'label', 'text']")
            continue
        if row["id"] != f"demo-{number:03d}":
            errors.append(f"line {number}: id {row['id']!r}, expected demo-{number:03d}")
        if row["label"] not in LABELS:
            errors.append(f"line {number}: unknown label {row['label']!r}")
        count = len(row["text"].split())
        if not MIN_WORDS <= count <= MAX_WORDS:
            errors.append(f"line {number}: {count} words, expected {MIN_WORDS}-{MAX_WORDS}")
        rows.append(row)
    if len(rows) != PER_LABEL * len(LABELS):
        errors.append(f"{len(rows)} rows, expected {PER_LABEL * len(LABELS)}")
    counts = Counter(row["label"] for row in rows)
    for label in LABELS:
        if counts[label] != PER_LABEL:
            errors.append(f"label {label}: {counts[label]} rows, expected {PER_LABEL}")
    for text, n in Counter(row["text"] for row in rows).items():
        if n > 1:
            errors.append(f"duplicate text ({n}x): {text!r}")
    word_sets = [(row["id"], set(words(row["text"]))) for row in rows]
    for (id_a, a), (id_b, b) in itertools.combinations(word_sets, 2):
        if len(a & b) / len(a | b) > MAX_JACCARD:
            errors.append(f"near-duplicate: {id_a} and {id_b}")
    return rows, counts, errors


def main():
    path = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("demo_emotion.jsonl"))
    rows, counts, errors = check(path)
    for error in errors:
        print(error, file=sys.stderr)
    lengths = [len(row["text"].split()) for row in rows]
    print(f"{len(rows)} rows, labels {dict(sorted(counts.items()))}, "
          f"words min {min(lengths)} max {max(lengths)} mean {sum(lengths) / len(lengths):.1f}")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
