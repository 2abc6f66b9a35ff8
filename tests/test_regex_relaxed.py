"""Patterns with lookarounds are also checked without them: a necessary condition that prunes
what the `regex` package's partial matching keeps alive after an assertion, and that must never
reject a prefix of a valid text."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import awrs
from awrs.constraints.regex.relaxed import relaxed_pattern, without_lookarounds

PATTERNS_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "patterns" / "patterns.csv"

STRIPPED = [
    (r"(?=[^0-9]*[0-9])[a-z0-9]{8}", r"(?:)[a-z0-9]{8}"),
    (r"a(?<!b)c", r"a(?:)c"),
    (r"[(?=]x(?=y)", r"[(?=]x(?:)"),  # inside a class it is no assertion
    (r"\(?=a\)b(?!c)", r"\(?=a\)b(?:)"),  # escaped parenthesis
    (r"(?=a[)]b)ab", r"(?:)ab"),  # a parenthesis inside a class inside the assertion
    (r"(?=(?:a|b))[ab]", r"(?:)[ab]"),  # non-capturing groups inside are fine
    (r"(\w)(?!\1)\w", r"(\w)(?:)\w"),  # a backreference inside keeps the numbering
]
EMPTY_LANGUAGES = {r"[(?=]x(?=y)", r"(?=a[)]b)ab"}  # nothing can follow the lookahead's demand
KEPT = [
    r"abc",  # nothing to remove
    r"(?=(a))a",  # a capture inside would renumber the groups after it
    r"(?=(?P<n>a))(?P=n)",
    r"(?>(?!a)\w|ab)",  # an atomic group may commit differently without the assertion
    r"(?=a)\w++",  # possessive
    r"(?(?=a)ab|cd)",  # a conditional tests an assertion
    r"(?x)(?=a) a  # comment (",  # verbose mode
]


@pytest.mark.parametrize(("pattern", "expected"), STRIPPED)
def test_lookarounds_are_removed(pattern, expected):
    assert without_lookarounds(pattern) == expected


@pytest.mark.parametrize("pattern", KEPT)
def test_patterns_where_removal_could_change_the_language_are_left_alone(pattern):
    assert without_lookarounds(pattern) is None
    assert without_lookarounds(r"(?=a)a", regex.VERBOSE) is None


def test_the_assertion_no_longer_keeps_hopeless_prefixes_alive():
    password = awrs.Regex(r"(?=[^0-9]*[0-9])[a-z0-9]{8}")
    assert password.engine == "backtracking"
    # partial matching alone accepts these: the assertion reached the end of the text
    assert regex.fullmatch(password.pattern, "Resolved", partial=True) is not None
    assert not password.accepts_prefix("Resolved")
    assert not password.accepts_prefix("Hello, world")
    assert password.accepts_prefix("abc") and password.accepts("abc1defg")
    assert not password.accepts("abcdefgh")  # the assertion still decides completion


def lookaround_patterns() -> list[str]:
    """The shared data's patterns with lookarounds that awrs relaxes, plus the examples above."""
    found = [pattern for pattern, _ in STRIPPED if pattern not in EMPTY_LANGUAGES]
    if PATTERNS_CSV.is_file():
        with PATTERNS_CSV.open(newline="") as handle:
            found += [row["regex"] for row in csv.DictReader(handle) if without_lookarounds(row["regex"])]
    return found


def candidate_texts(relaxed: str):
    """Texts of the lookaround-free pattern (the original's valid texts are among them)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            candidates = st.from_regex(relaxed, fullmatch=True)
            candidates.example  # noqa: B018 (hypothesis builds lazily: fail here, not in the test)
    except Exception:  # patterns hypothesis cannot draw from (regex-only syntax, backreferences)
        candidates = st.text(alphabet=st.sampled_from("ab1-. xyzABC\"'"), max_size=20)
    return candidates


@pytest.mark.parametrize("pattern", lookaround_patterns())
def test_every_prefix_of_a_valid_text_stays_alive(pattern):
    relaxed = without_lookarounds(pattern)
    compiled = relaxed_pattern(pattern)
    if compiled is None:
        pytest.skip(f"the relaxed pattern {relaxed!r} does not compile")
    constraint = awrs.Regex(pattern, engine="backtracking", timeout=1.0)
    valid = []

    @settings(max_examples=60, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(candidate_texts(relaxed))
    def check(text):
        if regex.fullmatch(pattern, text) is None:
            return
        valid.append(text)
        for end in range(len(text) + 1):
            assert compiled.fullmatch(text[:end], partial=True) is not None, (relaxed, text[:end])
        assert constraint.accepts_prefix(text) and constraint.accepts(text)

    check()
    assert valid, "no valid text among the drawn ones: the check above proved nothing"
