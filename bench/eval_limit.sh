#!/usr/bin/env bash
# AWRS-SMC against locally constrained decoding on the evaluation domains, for the question
# "does SMC return a valid answer at least as often as LCD within the token limit?".
# Embedded model on llama.cpp, the evaluation subset's token limits (bench/eval_subset.sh), resumable (re-running skips
# the instances already in the results files), then `awrs report`.
#
#   bench/eval_limit.sh tune|report [SEED] [DATA_DIR] [OUT_DIR]
#
# tune:   the evaluation subset of docs/evaluation.md (first 8 schemas of each JSON split, Spider dev 1-60, patterns
#         1-60, molecule prompts 1-20, goal problems 1-20): the only instances the budget
#         twist and the resampling policy were fitted and chosen on.
# report: the held-out subset (schemas 9-16 of each split, Spider dev 61-120, patterns 61-120,
#         molecule prompts 21-40, goal problems 21-40), never looked at while tuning.
# Rows: awrs-smc (the default: budget twist exact, resample power 0), lcd (5 samples), lcd
# with 1 sample (the paper's baseline), awrs-smc never resampling (ess 0), the ablations
# (without tempering: power 1; power 0.3, the default before power 0; without the exact part: twist off; both: the previous default;
# with the soft part: twist on), and awrs-smc and lcd at 10 particles on JSON and Spider.
# Instance k uses seed SEED + k.
# METHODS="..." limits the rows (names below, also rerank: sample-rerank with 5 samples, and masking-smc);
# DOMAINS="..." the domains; MODEL_OPTS="..." the model (default: the embedded model on llama.cpp).
set -euo pipefail
SUBSET=${1:?tune or report}
SEED=${2:-0}
DATA=${3:-../shared/data}
OUT=${4:-eval-limit/$SUBSET-seed$SEED}
AWRS=${AWRS:-.venv/bin/awrs}
MODEL_OPTS=${MODEL_OPTS:-"--backend llamacpp"}  # e.g. "--model qwen2.5-coder-1.5b --threads 1"
METHODS=${METHODS:-"smc lcd lcd1 smc-ess0 smc-p03 smc-p1 smc-off smc-old smc-on smc10 lcd10"}
DOMAINS=${DOMAINS:-"json json-free spider patterns molecules goal_inference"}
case "$SUBSET" in
  tune) JSON_RANGE="--limit 8"; RANGE="--limit 60"; SMALL="--limit 20" ;;
  report) JSON_RANGE="--start 8 --limit 8"; RANGE="--start 60 --limit 60"; SMALL="--start 20 --limit 20" ;;
  *) echo "first argument: tune or report" >&2; exit 2 ;;
esac
mkdir -p "$OUT"

row() {  # row NAME -> the awrs eval options of that row
  case "$1" in
    smc) echo "--method awrs-smc --particles 5" ;;
    lcd) echo "--method lcd --particles 5" ;;
    lcd1) echo "--method lcd --particles 1" ;;
    smc-ess0) echo "--method awrs-smc --particles 5 --ess-threshold 0" ;;
    smc-p1) echo "--method awrs-smc --particles 5 --resample-power 1" ;;
    smc-p03) echo "--method awrs-smc --particles 5 --resample-power 0.3" ;;
    smc-off) echo "--method awrs-smc --particles 5 --budget-twist off" ;;
    smc-old) echo "--method awrs-smc --particles 5 --budget-twist off --resample-power 1" ;;
    smc-on) echo "--method awrs-smc --particles 5 --budget-twist on" ;;
    smc10) echo "--method awrs-smc --particles 10" ;;
    lcd10) echo "--method lcd --particles 10" ;;
    rerank) echo "--method sample-rerank --particles 5" ;;
    masking-smc) echo "--method masking-smc --particles 5" ;;
    *) echo "unknown row $1" >&2; exit 2 ;;
  esac
}

for name in $METHODS; do
  opts="$(row "$name") $MODEL_OPTS --seed $SEED"
  for domain in $DOMAINS; do
    if [[ "$name" == *10 && "$domain" != json && "$domain" != spider ]]; then continue; fi
    case "$domain" in
      json|json-free)
        for split in Github_trivial Github_easy Github_medium Glaiveai2K WashingtonPost; do
          $AWRS eval "$domain" --data "$DATA/jsonschemabench/$split" $opts --max-tokens 350 $JSON_RANGE \
            --out "$OUT/eval-$domain.jsonl"
        done ;;
      spider) $AWRS eval spider --data "$DATA" $opts --max-tokens 150 $RANGE --out "$OUT/eval-spider.jsonl" ;;
      patterns) $AWRS eval patterns --data "$DATA" $opts --max-tokens 100 $RANGE --out "$OUT/eval-patterns.jsonl" ;;
      molecules) $AWRS eval molecules --data "$DATA" $opts --max-tokens 60 $SMALL --out "$OUT/eval-molecules.jsonl" ;;
      goal_inference) $AWRS eval goal_inference --data "$DATA" $opts $SMALL --out "$OUT/eval-goal.jsonl" ;;
    esac
  done
done
$AWRS report "$OUT"/eval-*.jsonl --out "$OUT/report.md"
