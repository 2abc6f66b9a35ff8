#!/usr/bin/env bash
# Fuzzing for MINUTES minutes, in two parts:
# 1. crash fuzzing (bench/fuzz_crash.py: atheris, coverage-guided) of the regex, JSON Schema and
#    Lark grammar compilers and their advance, a sixth of the time each (half in all; corpora kept
#    in $AWRS_FUZZ_CORPUS, default ~/.cache/awrs/fuzz, so later runs start where earlier ones got);
# 2. the differential tests (tests/test_differential_*.py) round after round, each with a new
#    seed and a larger budget than `make test` runs, for the rest of the time (a round starts
#    only while time is left, and one takes about 11 minutes on 2 cores at 200 examples:
#    AWRS_FUZZ_EXAMPLES).
#   bench/fuzz.sh MINUTES [PYTHON]
# Prints each part's outcome and, at the end, the totals. A finding stops the run and names the
# input (crash-* file) or the log with hypothesis's minimal examples: make each a regression test.
set -euo pipefail
MINUTES=${1:?minutes}
PY=${2:-.venv/bin/python}
EXAMPLES=${AWRS_FUZZ_EXAMPLES:-200}
end=$(( $(date +%s) + 60 * MINUTES ))
ROOT=$(pwd)
PYABS=$(realpath -s "$(command -v "$PY")")
CORPUS=${AWRS_FUZZ_CORPUS:-${XDG_CACHE_HOME:-$HOME/.cache}/awrs/fuzz}
if "$PYABS" -c "import atheris" 2>/dev/null; then
  for target in regex json grammar; do
    seconds=$(( 10 * MINUTES ))
    [ "$seconds" -ge 10 ] || seconds=10
    log="${TMPDIR:-/tmp}/awrs-fuzz-crash-$target.log"
    echo "crash fuzzing $target for $seconds s (corpus $CORPUS/$target)"
    if ! (cd "${TMPDIR:-/tmp}" && "$PYABS" "$ROOT/bench/fuzz_crash.py" "$target" "$seconds" \
          --seed "$(( $(date +%s) % 1000000 ))" --corpus "$CORPUS/$target") > "$log" 2>&1; then
      grep -A30 "Uncaught\|ERROR: libFuzzer\|Test unit written" "$log" | head -60
      echo "fuzz: crash fuzzing $target found an input (written to ${TMPDIR:-/tmp}/crash-*); log: $log"
      exit 1
    fi
    grep "^Done" "$log"
  done
else
  echo "crash fuzzing skipped: atheris is not installed (pip install atheris)"
fi
round=0
while [ "$(date +%s)" -lt "$end" ]; do
  round=$((round + 1))
  seed=$(( $(date +%s) % 1000000 + round ))
  echo "round $round: seed $seed, $EXAMPLES examples per pattern or schema"
  log="${TMPDIR:-/tmp}/awrs-fuzz-round-$seed.log"
  if AWRS_FUZZ_SEED=$seed AWRS_FUZZ_EXAMPLES=$EXAMPLES AWRS_FUZZ_SCHEMAS=${AWRS_FUZZ_SCHEMAS:-100} \
      AWRS_FUZZ_PATTERNS=${AWRS_FUZZ_PATTERNS:-1000} "$PY" -m pytest -q -p no:cacheprovider -rf \
      tests/test_differential_*.py > "$log" 2>&1; then
    tail -1 "$log"
  else
    grep -E "^FAILED|passed|failed" "$log" | tail -20
    echo "fuzz: round $round failed; hypothesis's minimal examples are in $log (rerun with AWRS_FUZZ_SEED=$seed)"
    exit 1
  fi
done
echo "fuzz: crash fuzzing without findings; $round differential rounds of $EXAMPLES examples per pattern and schema, every test passed"
