"""Regular patterns as byte automata, their token masks, and AWRS using masks exactly."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import awrs
from awrs.constraints import DEAD, Predicate, Regex
from awrs.errors import ConfigError
from awrs.sampling import AWRS, TokenChecker
from awrs.stats import Stats
from awrs.vocab import Vocabulary

PATTERNS = [
    r"[A-Z][a-z ,']{2,8}\.",
    r"(19|20)\d\d-(0[1-9]|1[012])",
    r"caf[éè]|naïve|“[a-z]+”",
    r"select\s+\w+\d?",
    r"^a.*?b$",
    r"[^\x00-\x7f]{1,3}x?",
    r"(ab|a)*c\Z",
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_regular_patterns_get_the_automaton(pattern):
    assert Regex(pattern).engine == "automaton" and Regex(pattern).compile(_vocabulary()).exact_masks


@pytest.mark.parametrize(
    "pattern, flags",
    [(r"(a)\1", 0), (r"(?=a)a", 0), (r"\p{Lu}", 0), (r"[[:alpha:]]", 0), (r"a", 2), (r"a\bb", 0), (r"x^y", 0),
     (r"(?i)yes", 0), (r"[^\s\S]", 0), (r"[^\Sa]", 0)],
)
def test_other_patterns_keep_the_backtracking_engine(pattern, flags):
    constraint = Regex(pattern, flags)
    assert constraint.engine == "backtracking" and not constraint.compile(_vocabulary()).exact_masks
    with pytest.raises(ConfigError, match="cannot be compiled to an automaton"):
        Regex(pattern, flags, engine="automaton")


@cache
def engines(pattern: str) -> tuple[Regex, Regex]:
    return Regex(pattern), Regex(pattern, engine="backtracking")


@st.composite
def near_matches(draw, pattern):
    """Texts that match ``pattern``, their prefixes, and small corruptions of them."""
    text = draw(st.from_regex(pattern.replace(r"\Z", "").lstrip("^").rstrip("$"), fullmatch=True))
    cut = draw(st.integers(0, len(text)))
    noise = draw(st.text(alphabet="aZ .é“\n\x1f٣", max_size=2))
    return draw(st.sampled_from([text, text[:cut], text[:cut] + noise + text[cut:]]))


@pytest.mark.parametrize("pattern", PATTERNS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_automaton_agrees_with_the_backtracking_engine(pattern, data):
    text = data.draw(near_matches(pattern))
    automaton, backtracking = engines(pattern)
    assert automaton.accepts(text) == backtracking.accepts(text), text
    # The automaton is exact on prefixes: alive exactly when some completion exists (checked
    # by search), so never looser than the backtracking engine's partial matching.
    encoded = text.encode()
    for cut in range(len(encoded) + 1):
        state = automaton.advance(automaton.start(), encoded[:cut])
        alive = state is not DEAD
        assert alive == (alive and _can_complete(automaton, state))
        assert backtracking.accepts_prefix(encoded[:cut]) >= alive


def _can_complete(constraint: Regex, state: int) -> bool:
    table, accepting = constraint._automaton.table, constraint._automaton.accepting
    seen, frontier = {state}, [state]
    while frontier:
        s = frontier.pop()
        if accepting[s]:
            return True
        for t in set(table[s].tolist()) - seen - {-1}:
            seen.add(t)
            frontier.append(t)
    return False


PIECES = [
    b"a", b"b", b"c", b"x", b"A", b"Z", b"ab", b"abc", b"ca", b"2", b"19", b"20", b"0", b"1",
    b"-", b" ", b".", b",", b"'", b"select", b"SEL", b"\n", b"caf", "é".encode(), b"\xc3", b"\xa9",
    b"\xe2\x80", b"\x9c", "“".encode(), "”".encode(), "naï".encode(), b"ve", b"\xff", b"",
]


def _vocabulary() -> Vocabulary:
    tokens = tuple(PIECES) + (b"<eos>", b"<pad>")
    return Vocabulary(tokens, frozenset({len(PIECES)}), frozenset({len(PIECES) + 1}))


@pytest.mark.parametrize("pattern", PATTERNS)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_token_masks_are_exactly_the_accepted_tokens(pattern, data):
    vocab = _vocabulary()
    constraint = engines(pattern)[0]
    text = data.draw(near_matches(pattern)).encode()
    state = constraint.advance(constraint.start(), text[: data.draw(st.integers(0, len(text)))])
    if state is DEAD:
        return
    expected = [
        t for t, token in enumerate(vocab.tokens)
        if t not in vocab.special_ids and token and constraint.advance(state, token) is not DEAD
    ]
    assert constraint.compile(vocab).token_mask(state).tolist() == expected
    assert constraint.compile(vocab).token_mask(state).tolist() == expected  # cached


def test_masks_combine_by_intersection():
    vocab = _vocabulary()
    both = Regex("[abc]+") & Regex("a.*")
    assert both.compile(vocab).exact_masks
    assert both.compile(vocab).token_mask(both.start()).tolist() == [0, 6, 7]  # a, ab, abc
    with_predicate = Regex("[abc]+") & Predicate(lambda s: "cc" not in s)
    assert not with_predicate.compile(vocab).exact_masks
    assert with_predicate.compile(vocab).token_mask(with_predicate.start()).tolist() == [0, 1, 2, 6, 7, 8]
    assert Regex(r"(a)\1").compile(vocab).token_mask(("", b"")) is None


# --- the sampler with masks: exact by Monte Carlo ---------------------------------------

VOCAB = Vocabulary((b"a", b"b", b"ab", b"c", b"cc", b"<eos>", b"<pad>"), frozenset({5}), frozenset({6}))
MASS = np.array([0.05, 0.3, 0.1, 0.25, 0.1, 0.2, 0.0])


def _samplers():
    return {
        "never": AWRS(masks="never"),
        "auto, mask after the first rejection": AWRS(masks="auto", mask_cost=0.0),
        "always": AWRS(masks="always"),
        "two-loop, always": AWRS("two-loop", masks="always"),
    }


@pytest.mark.parametrize("name", list(_samplers()))
@pytest.mark.parametrize("exact", [True, False])
def test_awrs_with_masks_is_properly_weighted(name, exact):
    """Frequencies follow p restricted to the valid tokens, and E[w 1{x=a}] = p(a) 1[a valid].

    After "a", with "a+b?": 'a', 'b', 'ab' and EOS are valid. Adding a predicate that forbids
    'ab' makes the mask a strict superset (AWRS then checks the predicate on top of it).
    """
    constraint = Regex("a+b?") if exact else Regex("a+b?") & Predicate(lambda s: "ab" not in s[1:])
    assert constraint.compile(VOCAB).exact_masks == exact
    valid = [0, 1, 2, 5] if exact else [0, 1, 5]
    z = MASS[valid].sum()
    sampler = _samplers()[name]
    rng = np.random.default_rng(11)
    state = constraint.advance(constraint.start(), b"a")
    n = 40_000
    counts, weighted, stats = np.zeros(len(MASS)), np.zeros(len(MASS)), Stats()
    for _ in range(n):
        draw = sampler.propose(MASS, None, TokenChecker(constraint.compile(VOCAB), state, stats), rng)
        counts[draw.token] += 1
        weighted[draw.token] += math.exp(draw.log_weight)
    for token in range(len(MASS)):
        g = MASS[token] / z if token in valid else 0.0
        assert abs(counts[token] / n - g) <= 5 * math.sqrt(max(g * (1 - g), 1e-12) / n) + 1e-12, token
        truth = MASS[token] if token in valid else 0.0
        assert abs(weighted[token] / n - truth) <= 0.02 * z, token  # loose: weights vary
    if name == "never":
        assert stats.masks == 0
    else:
        assert stats.masks > 0
    if name == "always" and exact:
        assert stats.constraint_checks <= 3 * n  # one mask, one check, EOS's completion check


def test_mask_modes_are_validated():
    with pytest.raises(ConfigError, match="masks"):
        AWRS(masks="sometimes")
    model = awrs.TableModel([b"a", b"b", b"<eos>"], lambda context: [0.4, 0.4, 0.2], eos=2)
    with pytest.raises(ConfigError, match="masks"):
        awrs.generate(model, [], Regex("a"), masks="sometimes")
    result = awrs.generate(model, [], Regex("a+"), masks="always", particles=4, max_tokens=4, seed=0)
    assert result.samples and all(set(s.text) == {"a"} for s in result.samples)
    assert result.stats.masks > 0


def test_same_seed_same_samples_whatever_the_clock_says(monkeypatch):
    """Mask decisions read no clock: a run where every timing is scrambled (checks look free,
    masks look ruinous, then the reverse) gives the same samples as an ordinary one."""
    import itertools
    import time as time_module

    from awrs.smc import SMCConfig, run_smc

    vocab = [bytes([a, b]) for a in b"abcd" for b in b"abcd"] + [b"<eos>"]
    model = awrs.TableModel(vocab, lambda context: np.full(len(vocab), 1.0 / len(vocab)), eos=len(vocab) - 1)

    def run():
        stats = Stats()
        sampler = AWRS(masks="auto", mask_cost=2.0)  # a mask after two rejections, if any
        population = run_smc(model, [], Regex("(ab|cd)+"), sampler, SMCConfig(particles=8, max_tokens=5),
                             np.random.default_rng(3), stats=stats)
        return population.tokens, population.log_weights.tolist(), stats.masks

    reference = run()
    ticks = itertools.count()
    monkeypatch.setattr(time_module, "perf_counter", lambda: (next(ticks) % 7) ** 3 * 1e3)
    assert run() == reference
    assert reference[2] > 0  # the run did use masks, so their timing could have mattered


def test_auto_reuses_the_masks_a_run_has_computed():
    vocab = awrs.Vocabulary((b"a", b"b", b"c", b"<eos>"), frozenset({3}))
    constraint = Regex("a+")
    sampler = AWRS(masks="auto")
    rng = np.random.default_rng(0)
    mass = np.array([0.05, 0.5, 0.4, 0.05])
    first = TokenChecker(constraint.compile(vocab), constraint.start(), Stats())
    assert not sampler._mask_first(first)
    sampler.remember_mask(first)
    second = TokenChecker(constraint.compile(vocab), constraint.start(), Stats())
    draw = sampler.propose(mass, None, second, rng)
    assert draw.token == 0 and draw.log_weight == pytest.approx(math.log(0.05))  # exact weight
    assert second._stats.constraint_checks <= 2 and second._stats.masks == 1  # the token, is_complete


# --- grammar masks (llguidance over the vocabulary) ---------------------------------------

FIXTURES = Path(__file__).parent / "fixtures" / "grammar"
SQL_PIECES = [b"SELECT", b" FROM", b" WHERE", b" name", b"name", b" count", b"(*)", b" =", b" '",
              b"singer", b" singer", b"_id", b" AS", b" T1", b"T1.", b" JOIN", b" ON", b",", b", ",
              b" ORDER BY", b" DESC", b" LIMIT", b" 1", b"Country", b" country", "é".encode(), b"\xe6\x97"]


def _byte_vocabulary(pieces) -> Vocabulary:
    tokens = tuple(bytes([b]) for b in range(256)) + tuple(pieces) + (b"<eos>",)
    return Vocabulary(tokens, frozenset({len(tokens) - 1}))


def _grammar_cases():
    json_grammar = awrs.Grammar(
        r"""
        ?start: value
        ?value: object | array | ESCAPED_STRING | SIGNED_NUMBER | "true" | "null"
        array: "[" [value ("," value)*] "]"
        object: "{" [ESCAPED_STRING ":" value ("," ESCAPED_STRING ":" value)*] "}"
        %import common.ESCAPED_STRING
        %import common.SIGNED_NUMBER
        %import common.WS
        %ignore WS
        """
    )
    cases = [(json_grammar, ['{"a": [1, -2.5e3, "x\\"y", true]}', '[null, "é日"]'])]
    goal = FIXTURES / "goal_inference.lark"
    cases.append((awrs.Grammar(goal.read_text()), [" (on b1 b2) (clear b3) (arm-empty)"]))
    grammar = FIXTURES / "concert_singer.lark"
    if grammar.is_file():
        cases.append((awrs.Grammar(grammar.read_text()), [
            "SELECT count(*) FROM singer",
            "SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.concert_id ORDER BY T1.age DESC LIMIT 1",
        ]))
    return cases


def test_grammar_token_masks_are_exactly_the_accepted_tokens():
    """At every prefix of valid texts (bytes, and tokens split mid-character), on grammars with
    forced literals, lazy terminals and %ignore: the llguidance mask equals checking each token."""
    vocab = _byte_vocabulary(SQL_PIECES + [b'{"', b'":', b'",', b"[1", b"true", b" (on", b" b1", b"clear"])
    for grammar, texts in _grammar_cases():
        assert grammar.compile(vocab).exact_masks
        for text in texts:
            data = text.encode()
            for cut in range(len(data) + 1):
                state = grammar.advance(grammar.start(), data[:cut])
                assert state is not DEAD, (text, cut)
                expected = [
                    t for t, token in enumerate(vocab.tokens)
                    if t not in vocab.special_ids and grammar.advance(state, token) is not DEAD
                ]
                assert grammar.compile(vocab).token_mask(state).tolist() == expected, (text, data[:cut])


def test_grammar_masks_with_a_vocabulary_lacking_single_bytes():
    """Forced text may be spelled by any tokens (llguidance's forcing is off), and text the
    vocabulary cannot spell greedily gets no mask (checks only, still exact)."""
    grammar = awrs.Grammar('start: "SELECT " NAME " FROM " NAME\nNAME: /[a-z]+/')
    pieces = [b"SEL", b"ECT", b"SELECT ", b"S", b"a", b"ab", b" FROM", b" ", b"F", b"ROM", b"<eos>"]
    vocab = Vocabulary(tuple(pieces), frozenset({len(pieces) - 1}))
    for text in [b"", b"S", b"SELECT ab", b"SELECT ab ", b"SELECT ab F"]:
        state = grammar.advance(grammar.start(), text)
        expected = [t for t, token in enumerate(pieces[:-1]) if grammar.advance(state, token) is not DEAD]
        assert grammar.compile(vocab).token_mask(state).tolist() == expected, text
    unspellable = grammar.advance(grammar.start(), b"SELECT x")
    assert unspellable is not DEAD and grammar.compile(vocab).token_mask(unspellable) is None
    # masks="always" then falls back to checking: a valid token, no error
    mass = np.full(len(pieces), 1.0 / len(pieces))
    stats = Stats()
    for seed in range(20):
        checker = TokenChecker(grammar.compile(vocab), unspellable, stats)
        draw = AWRS(masks="always").propose(mass, None, checker, np.random.default_rng(seed))
        assert draw.token in (4, 5, 6, 7) and math.isfinite(draw.log_weight)  # a, ab, " FROM", " "
    assert stats.masks == 0


def test_sql_masks_come_from_its_grammar(tmp_path):
    import sqlite3

    db = tmp_path / "shop.sqlite"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE singer (singer_id INTEGER, name TEXT, country TEXT)")
    sql = awrs.Sql(db)
    vocab = _byte_vocabulary(SQL_PIECES)
    state = sql.advance(sql.start(), b"SELECT name FROM")
    expected = [t for t, token in enumerate(vocab.tokens)
                if t not in vocab.special_ids and sql.advance(state, token) is not DEAD]
    assert sql.compile(vocab).exact_masks and sql.compile(vocab).token_mask(state).tolist() == expected
