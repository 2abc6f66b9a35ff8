#!/usr/bin/env bash
# The README's evaluation table: every domain x method on a fixed subset of the shared data,
# with the embedded model on llama.cpp, 5 particles, seed 0. About 3 hours on 2 CPU cores.
# Resumable: re-running skips the instances already in the results files.
#
#   bench/eval_subset.sh [DATA_DIR] [OUT_DIR]      (defaults: ../shared/data, eval-results)
set -euo pipefail
DATA=${1:-../shared/data}
OUT=${2:-eval-results}
AWRS=${AWRS:-.venv/bin/awrs}
COMMON="--backend llamacpp --particles 5 --seed 0"
mkdir -p "$OUT"

for method in awrs-smc lcd unconstrained sample-rerank; do
  "$AWRS" eval patterns --data "$DATA" --method $method $COMMON --max-tokens 100 --limit 60 --out "$OUT/eval-patterns.jsonl"
  "$AWRS" eval molecules --data "$DATA" --method $method $COMMON --max-tokens 60 --limit 20 --out "$OUT/eval-molecules.jsonl"
  for split in Github_trivial Github_easy Github_medium Glaiveai2K WashingtonPost; do  # 8 schemas each
    "$AWRS" eval json --data "$DATA/jsonschemabench/$split" --method $method $COMMON --limit 8 --out "$OUT/eval-json.jsonl"
  done
  if [ "$method" = awrs-smc ] || [ "$method" = lcd ]; then  # the same schemas, JSON whitespace allowed
    for split in Github_trivial Github_easy Github_medium Glaiveai2K WashingtonPost; do
      "$AWRS" eval json-free --data "$DATA/jsonschemabench/$split" --method $method $COMMON --limit 8 \
        --out "$OUT/eval-json-free.jsonl"
    done
  fi
  "$AWRS" eval spider --data "$DATA" --method $method $COMMON --max-tokens 150 --limit 60 --out "$OUT/eval-spider.jsonl"
  "$AWRS" eval goal_inference --data "$DATA" --method $method $COMMON --limit 20 --out "$OUT/eval-goal.jsonl"
done
# token masking checks all 49,152 tokens per particle and step: the first 20 patterns only, and
# at most 30 s each (a backreference pattern re-checked on a growing text takes hours otherwise)
"$AWRS" eval patterns --data "$DATA" --method masking $COMMON --max-tokens 100 --limit 20 --time-limit 30 \
  --out "$OUT/eval-patterns.jsonl"

"$AWRS" report "$OUT"/eval-*.jsonl --out "$OUT/report.md" --plot "$OUT/report.png"
