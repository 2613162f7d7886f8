#!/usr/bin/env bash
# One shard of a Candor run per Slurm array task, against a served model (README: "Beyond one
# machine"). Submit with
#   sbatch --array=0-7 scripts/slurm-shards.sh http://vllm-head:8000/v1 emotion runs/emotion
# then join the shards with
#   candor merge --out runs/emotion-all runs/emotion/shard-*
# A preempted or failed task re-runs the same command and resumes its shard directory.
#SBATCH --job-name=candor-shard
#SBATCH --cpus-per-task=2
#SBATCH --time=12:00:00
#SBATCH --requeue
set -euo pipefail
url="${1:?server URL, e.g. http://vllm-head:8000/v1}"
dataset="${2:?dataset, e.g. emotion}"
out="${3:?directory for the shard directories}"
index="${SLURM_ARRAY_TASK_ID:?run as a Slurm array job}"
count="${SLURM_ARRAY_TASK_COUNT:?run as a Slurm array job}"
mkdir -p "$out"
exec "${CANDOR:-candor}" run --model "$url" --dataset "$dataset" --verbalized constrained \
  --shard "$index/$count" --out "$out/shard-$index" --concurrency "${CONCURRENCY:-8}" --quiet \
  ${CANDOR_ARGS:-}
