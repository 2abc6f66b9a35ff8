"""Regex constraints against an independent oracle, on inputs nobody chose (hypothesis).

For every pattern of ``shared/data/patterns`` that Python's ``re`` can parse (hypothesis draws
matching strings with ``from_regex``, which speaks ``re``), on both engines (the automaton where
the pattern compiles to one, and backtracking):

* a matching string, fed in random pieces -- cut at random points, inside multi-byte
  characters too, as a tokenizer would cut it -- stays alive after every piece and is
  complete at the end;
* random strings and mutations of matching ones are complete exactly when
  ``regex.fullmatch`` (the oracle: the `regex` package's own matcher, which shares no code
  with awrs's automaton) says they match, and a string the oracle matches is never declared
  dead on the way.

The budget is fixed and derandomized in ``make test`` (``AWRS_FUZZ_EXAMPLES`` per pattern, 12);
``make fuzz MINUTES=N`` runs round after round with more examples and a new seed each
(``AWRS_FUZZ_SEED``). A disagreement found here becomes a regression case below, with its minimal example.
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from pathlib import Path

import pytest
import regex
from conftest import feed_in_pieces
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from awrs.constraints import Regex
from awrs.constraints.base import DEAD
from awrs.errors import ConfigError

PATTERNS_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "patterns" / "patterns.csv"
FUZZ_EXAMPLES = int(os.environ.get("AWRS_FUZZ_EXAMPLES", "12"))
PATTERN_LIMIT = int(os.environ.get("AWRS_FUZZ_PATTERNS", "80"))
FUZZ_SEED = os.environ.get("AWRS_FUZZ_SEED")  # set by `make fuzz`: a new part of the input space per round


def python_re_patterns() -> list[str]:
    """Patterns both ``re`` and ``regex`` parse the same way (no ``regex``-only syntax)."""
    if not PATTERNS_CSV.is_file():
        return []
    out = []
    with PATTERNS_CSV.open(newline="") as handle:
        for row in csv.DictReader(handle):
            pattern = row["regex"]
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    re.compile(pattern)
                    regex.compile(pattern)
            except (re.error, regex.error, RecursionError, OverflowError):
                continue
            if "(?" in pattern or "\\p" in pattern or "\\P" in pattern:
                continue  # group extensions and properties read differently in the two modules
            out.append(pattern)
    return out[:PATTERN_LIMIT]


PATTERNS = python_re_patterns()
pytestmark = pytest.mark.skipif(not PATTERNS, reason=f"no patterns file at {PATTERNS_CSV}")


def constraints_for(pattern: str) -> list[Regex]:
    out = [Regex(pattern, engine="backtracking", timeout=1.0)]
    try:
        out.append(Regex(pattern, engine="automaton"))
    except ConfigError:
        pass  # the pattern needs the backtracking engine
    return out


def oracle(pattern: str, text: str) -> bool:
    return regex.fullmatch(pattern, text) is not None


def mutate(text: str, data) -> str:
    position = data.draw(st.integers(0, len(text)))
    kind = data.draw(st.sampled_from(["insert", "delete", "replace", "swap"]))
    char = data.draw(st.characters(codec="utf-8", exclude_categories=("Cs",)))
    if kind == "insert" or not text:
        return text[:position] + char + text[position:]
    position = min(position, len(text) - 1)
    if kind == "delete":
        return text[:position] + text[position + 1:]
    if kind == "replace":
        return text[:position] + char + text[position + 1:]
    return text[:position] + text[position + 1:position + 2] + text[position] + text[position + 2:]


FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=FUZZ_SEED is None, database=None,
                suppress_health_check=list(HealthCheck))
ROUND = int(FUZZ_SEED or 0)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_matching_strings_stay_alive_in_any_pieces_and_complete(pattern):
    constraints = constraints_for(pattern)

    @FUZZ
    @seed(ROUND)
    @given(data=st.data())
    def check(data):
        text = data.draw(st.from_regex(re.compile(pattern), fullmatch=True), label="text")
        if not oracle(pattern, text):
            return  # re and regex disagree on this string: not a question for awrs
        encoded = text.encode()
        cuts = data.draw(st.lists(st.integers(0, len(encoded)), max_size=6), label="cuts")
        for constraint in constraints:
            states = feed_in_pieces(constraint, encoded, cuts)
            assert all(s is not DEAD for s in states), (constraint.engine, text, cuts)
            assert constraint.is_complete(states[-1] if states else constraint.start()), (constraint.engine, text)

    check()


@pytest.mark.parametrize("pattern", PATTERNS)
def test_completion_agrees_with_the_oracle_on_random_and_mutated_strings(pattern):
    constraints = constraints_for(pattern)

    @FUZZ
    @seed(ROUND + 1_000_000)
    @given(data=st.data())
    def check(data):
        if data.draw(st.booleans(), label="mutated"):
            base = data.draw(st.from_regex(re.compile(pattern), fullmatch=True), label="base")
            text = mutate(base, data)
        else:
            text = data.draw(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),
                             label="text")
        expected = oracle(pattern, text)
        encoded = text.encode()
        cuts = data.draw(st.lists(st.integers(0, len(encoded)), max_size=4), label="cuts")
        for constraint in constraints:
            states = feed_in_pieces(constraint, encoded, cuts)
            complete = bool(states) and states[-1] is not DEAD and constraint.is_complete(states[-1])
            if not states:  # the empty text
                complete = constraint.is_complete(constraint.start())
            if expected:
                assert all(s is not DEAD for s in states), (constraint.engine, text, cuts)
            assert complete == expected, (constraint.engine, text, cuts)

    check()
