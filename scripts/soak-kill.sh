#!/usr/bin/env bash
# Crash safety, measured (issue 12): kills `candor run` with SIGKILL at N random moments (from
# the first milliseconds — the manifest write — to the last record) and resumes it each time,
# then checks that the final predictions.jsonl equals an uninterrupted run's (timing aside).
# Rounds start from an empty directory until N kills have landed. Usage: scripts/soak-kill.sh N
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
kills_wanted="${1:-50}"
model="${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
data="crates/candor-cli/tests/fixtures/run/data"
work="${WORK:-target/soak-kill}"
[[ -f "$model" ]] || scripts/fetch-default-model.sh
cargo build --release -p candor-cli --quiet
candor="$root/target/release/candor"
rm -rf "$work" && mkdir -p "$work"
run() { exec "$candor" run --model "$model" --dataset emotion --data-dir "$data" --verbalized constrained --quiet --batch 2 --out "$1"; }
untimed() { python3 -c 'import json,sys
for line in open(sys.argv[1]):
    r = json.loads(line); r.pop("elapsed_ms", None); print(json.dumps(r, sort_keys=True))' "$1"; }

start=$(date +%s.%N)
("$candor" run --model "$model" --dataset emotion --data-dir "$data" --verbalized constrained --quiet --batch 2 --out "$work/reference") 2>/dev/null
duration_ms=$(python3 -c "import time,sys; print(int((time.time() - float(sys.argv[1])) * 1000))" "$start")
untimed "$work/reference/predictions.jsonl" >"$work/reference.txt"
echo "uninterrupted run: ${duration_ms} ms; killing at random moments in 0..${duration_ms} ms"

kills=0 resumes=0 rounds=0 torn=0
while (( kills < kills_wanted )); do
  rounds=$((rounds + 1))
  dir="$work/round-$rounds"
  while :; do
    run "$dir" 2>"$work/last.log" &
    pid=$!
    if (( kills < kills_wanted )); then
      sleep "$(python3 -c "import random,sys; print(random.randint(0, int(sys.argv[1])) / 1000)" "$duration_ms")"
      kill -9 "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    # A run that printed its closing line finished; any other was killed (and is resumed).
    if grep -q "12 examples" "$work/last.log"; then
      grep -q "torn last line" "$work/last.log" && torn=$((torn + 1))
      break
    fi
    kills=$((kills + 1))
    resumes=$((resumes + 1))
  done
  if ! cmp -s <(untimed "$dir/predictions.jsonl") "$work/reference.txt"; then
    echo "round $rounds: final predictions differ from the uninterrupted run's"
    diff <(untimed "$dir/predictions.jsonl") "$work/reference.txt" | head -5
    exit 1
  fi
done
echo "kills: $kills in $rounds rounds (each resumed; $resumes resumes); torn last lines repaired on a round's final resume: $torn"
echo "every round's final predictions.jsonl equals the uninterrupted run's: ok"
