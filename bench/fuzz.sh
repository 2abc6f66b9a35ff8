#!/usr/bin/env bash
# The differential tests (tests/test_differential_*.py) round after round, each with a new seed
# and a larger budget than `make test` runs, until MINUTES are spent (a round starts only while
# time is left, and one takes about 8 minutes on 2 cores at 200 examples: AWRS_FUZZ_EXAMPLES).
#   bench/fuzz.sh MINUTES [PYTHON]
# Prints each round's outcome and, at the end, the rounds and examples tried. A failing round
# stops the run and names the log with hypothesis's minimal examples: make each a regression test.
set -euo pipefail
MINUTES=${1:?minutes}
PY=${2:-.venv/bin/python}
EXAMPLES=${AWRS_FUZZ_EXAMPLES:-200}
end=$(( $(date +%s) + 60 * MINUTES ))
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
echo "fuzz: $round rounds of $EXAMPLES examples per pattern and schema, every test passed"
