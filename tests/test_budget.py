"""The budget twist (awrs.smc.budget) and the bound it rests on, against exact enumeration.

* ``min_completion_bytes`` is a lower bound on the bytes of every valid completion, at every
  byte of every valid text (property-based for regexes on both engines and JSON Schemas; fixed
  texts and every prefix of the Spider gold queries and RDKit's molecules for SQL and SMILES);
  on the byte automaton it is exactly the shortest completion
  (breadth-first search over bytes), and for JSON, where only syntax matters, too.
* The twist's exact part drops a prefix only when no completion fits in the tokens left
  (every prefix of tiny vocabularies enumerated, and every particle of SMC runs recorded), and
  on a one-byte-per-token vocabulary it drops every prefix that cannot finish.
* Where the token limit binds, SMC under every twist setting estimates P(constraint, |x| <= L)
  without bias and its posterior matches the truncated target p(x | constraint, |x| <= L).
* The same checks fail broken twists: one not taken back out of the weights, one that kills a
  prefix with exactly enough room left, one that counts a token as a single byte, a soft part
  that gives up on a particle that could still finish.
* Particles dropped by the twist are counted, and named in the message when none is left.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import hashed_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import awrs
import awrs.smc.step
from awrs.smc.budget import BudgetTwist, ParticleProgress
from awrs.constraints import DEAD, All, JsonSchema, Regex
from awrs.errors import ConfigError
from awrs.models import TableModel
from awrs.sampling import AWRS
from awrs.smc import SMCConfig, run_smc
from awrs.testing import exact_target, normalize, total_variation

PROPERTY = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

# --- min_completion_bytes is a lower bound ---------------------------------------------------

# Full-match patterns whose texts hypothesis's from_regex generates with the same meaning under
# Python's re (no \d, \w, \s: the regex package reads them differently).
PATTERNS = [
    r"(ab|c)+d?",
    r"[a-c]{2,5}x",
    r"(foo|foobar|fo)baz|q{3,}",
    r"é+(ü|ab)*z",
    r"[一-丅]{1,3}!|😀+",
    r"(\+1 )?\(?[0-9]{3}\)?-[0-9]{4}",
    r"x(yz){0,3}",
]


def check_lower_bound(constraint, data: bytes) -> None:
    """At every byte of a valid text, the bound is at most the bytes of the text still to come."""
    state = constraint.start()
    for cut in range(len(data) + 1):
        if cut:
            state = constraint.advance(state, data[cut - 1 : cut])
            assert state is not DEAD, (data, cut)
        needed = constraint.min_completion_bytes(state)
        assert 0 <= needed <= len(data) - cut, (data[:cut], data[cut:], needed)
    assert constraint.is_complete(state), data
    assert constraint.min_completion_bytes(state) == 0


@pytest.mark.parametrize("engine", ["automaton", "backtracking"])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_regex_bound_never_exceeds_the_rest_of_a_valid_text(pattern, engine):
    constraint = Regex(pattern, engine=engine)
    assert constraint.engine == engine

    @PROPERTY
    @given(st.from_regex(pattern, fullmatch=True))
    def check(text):
        check_lower_bound(constraint, text.encode("utf-8"))

    check()


def shortest_completion(constraint, state) -> int | None:
    """Fewest bytes that take ``state`` to a complete one: breadth-first over all 256 bytes,
    using only ``advance`` and ``is_complete`` (automaton states are ints, so this ends)."""
    frontier, seen, distance = [state], {state}, 0
    while frontier:
        if any(constraint.is_complete(s) for s in frontier):
            return distance
        following = []
        for s in frontier:
            for byte in range(256):
                after = constraint.advance(s, bytes([byte]))
                if after is not DEAD and after not in seen:
                    seen.add(after)
                    following.append(after)
        frontier, distance = following, distance + 1
    return None


def reachable_states(constraint) -> list:
    start = constraint.start()
    seen, stack = {start}, [start]
    while stack:
        state = stack.pop()
        for byte in range(256):
            after = constraint.advance(state, bytes([byte]))
            if after is not DEAD and after not in seen:
                seen.add(after)
                stack.append(after)
    return sorted(seen)


@pytest.mark.parametrize("pattern", PATTERNS[:5] + ["", "a{7}|b{3}c{3}", "(a|bc)(abc|b)*d"])
def test_automaton_bound_is_the_shortest_completion(pattern):
    constraint = Regex(pattern, engine="automaton")
    states = reachable_states(constraint)
    assert len(states) > 1 or pattern == ""
    for state in states:
        assert constraint.min_completion_bytes(state) == shortest_completion(constraint, state), state


def test_backtracking_bound_counts_an_unfinished_character():
    constraint = Regex("é+", engine="backtracking")
    half = constraint.advance(constraint.start(), b"\xc3")
    assert constraint.min_completion_bytes(half) == 1
    assert constraint.min_completion_bytes(constraint.advance(half, b"\xa9")) == 0


def test_combinators_take_the_largest_bound_or_delegate():
    both = All(Regex("a{3}b?"), Regex("[ab]{1,5}"))
    assert both.min_completion_bytes(both.start()) == 3
    assert both.min_completion_bytes(both.advance(both.start(), b"aa")) == 1
    for text in (b"aaa", b"aaab"):
        check_lower_bound(both, text)
    scored = Regex("abc").scored(lambda text, finished: 0.0)
    assert scored.min_completion_bytes(scored.start()) == 3


JSON_LEAVES = (st.none() | st.booleans() | st.integers()
               | st.floats(allow_nan=False, allow_infinity=False) | st.text())
ANY_JSON = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
NUMBER = st.integers() | st.floats(allow_nan=False, allow_infinity=False)
SCHEMAS = {
    "any": ({}, ANY_JSON),
    "object": (
        {"type": "object", "required": ["name"], "additionalProperties": False,
         "properties": {"name": {"type": "string"}, "tags": {"type": "array", "items": {"type": "integer"}},
                        "ok": {"type": "boolean"}, "score": {"type": "number"}, "none": {"type": "null"}}},
        st.fixed_dictionaries({"name": st.text()}, optional={
            "tags": st.lists(st.integers()), "ok": st.booleans(), "score": NUMBER, "none": st.none()}),
    ),
    "array-of-any-of": (
        {"type": "array", "items": {"anyOf": [{"type": "number"}, {"type": "string", "maxLength": 3},
                                              {"type": "array", "items": {"type": "boolean"}}]}},
        st.lists(NUMBER | st.text(max_size=3) | st.lists(st.booleans())),
    ),
}


@pytest.mark.parametrize("whitespace", ["compact", "free"])
@pytest.mark.parametrize("name", SCHEMAS)
def test_json_bound_never_exceeds_the_rest_of_a_valid_text(name, whitespace):
    schema, values = SCHEMAS[name]
    constraint = JsonSchema(schema, whitespace=whitespace, max_whitespace=64)

    @PROPERTY
    @given(values)
    def check(value):
        assert constraint.validate(value)
        if whitespace == "compact":
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        else:
            text = " " + json.dumps(value, indent=1) + "\n"  # and \u escapes
        check_lower_bound(constraint, text.encode("utf-8"))

    check()


@pytest.mark.parametrize("prefix, needed", [
    ("", 1), ("[", 1), ("[[{", 3), ('{"', 4), ('{"a"', 3), ('{"a":', 2), ('{"a":t', 4), ('[-', 2),
    ("[1.", 2), ("[1e", 2), ("[1e+", 2), ("[1", 1), ('["ab', 2), ('{"a":1,', 5), ("[nul", 2), ("0", 0),
])
def test_json_bound_is_the_shortest_completion_where_only_syntax_matters(prefix, needed):
    """Under the empty schema the bound is the syntax's own minimum: e.g. '{"a":1,' needs '"":0}'."""
    constraint = JsonSchema({})
    state = constraint.advance(constraint.start(), prefix.encode())
    assert constraint.min_completion_bytes(state) == needed


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
GRAMMAR_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "grammar"
MOLECULES = ["c1ccccc1.O", "[Na+].[Cl-]", "CC(=O)O", "C(C(C(C)))", "C1CC=1", "[13CH4]", "OC(=O)[C@@H](N)C",
             "C1.C1", "F/C=C/F",
             # an unfinished two-digit ring label whose last byte closes an open ring
             "C%10CC%10", "C%(123)CC%(123)"]


@pytest.mark.parametrize("molecule", MOLECULES)
def test_smiles_bound_never_exceeds_the_rest_of_a_valid_molecule(molecule):
    pytest.importorskip("partialsmiles")
    pytest.importorskip("rdkit.Chem")
    from awrs.constraints import Smiles

    check_lower_bound(Smiles(), molecule.encode())


def test_smiles_bound_on_the_gdb17_sample():
    pytest.importorskip("partialsmiles")
    pytest.importorskip("rdkit.Chem")
    from awrs.constraints import Smiles

    smiles = Smiles()
    molecules = (GRAMMAR_FIXTURES / "GDB17_sample.txt").read_text().split()
    assert len(molecules) == 30
    for molecule in molecules:
        check_lower_bound(smiles, molecule.encode())
    # nontrivial: one byte per open branch and ring, and one for a trailing bond
    assert [smiles.min_completion_bytes(text) for text in ("", "C(C1", "C1CC(=", "C[")] == [1, 2, 2, 1]


SQL_QUERIES = [
    "SELECT name FROM singer WHERE (age > (30 + 1))",
    "SELECT name FROM singer WHERE name = 'it''s (not'",
    'SELECT "name" FROM singer',
    "SELECT [name] FROM singer",
    "SELECT count(*) FROM singer",
    "SELECT name FROM singer WHERE singer_id IN (SELECT singer_id FROM concert WHERE year = 2014)",
    "SELECT name FROM singer -- a comment (",
    "SELECT name /* (x ' */ FROM singer",
]


def test_sql_bound_never_exceeds_the_rest_of_a_valid_query(tmp_path):
    pytest.importorskip("lark")
    pytest.importorskip("llguidance")
    import sqlite3

    from awrs.constraints import Sql

    path = tmp_path / "music.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript("""
            CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INT);
            CREATE TABLE concert (concert_id INTEGER PRIMARY KEY, concert_name TEXT, year INT, singer_id INT);
        """)
    conn.close()
    sql = Sql(path)
    for query in SQL_QUERIES:
        check_lower_bound(sql, query.encode())
    state = sql.advance(sql.start(), b"SELECT name FROM singer WHERE (age > (30")
    assert sql.min_completion_bytes(state) == 2
    assert sql.min_completion_bytes(sql.advance(sql.start(), b"SELECT 'a")) == 1


def test_sql_bound_fits_every_prefix_of_the_spider_gold_queries():
    from awrs.constraints.grammar.sql import unclosed_sql

    gold = SHARED / "spider" / "dev_gold.sql"
    if not gold.is_file():
        pytest.skip("shared Spider data absent")
    queries = [line.split("\t")[0].encode() for line in gold.read_text().splitlines() if line.strip()]
    assert len(queries) > 500
    for query in queries:
        for cut in range(len(query) + 1):
            assert unclosed_sql(query[:cut]) <= len(query) - cut, (query[:cut], query[cut:])
    assert sum(unclosed_sql(q[: q.find(b"(") + 1]) > 0 for q in queries if b"(" in q) > 100


def test_smiles_bound_fits_every_prefix_of_molecules_written_from_many_atoms():
    pytest.importorskip("rdkit")
    from rdkit import Chem, RDConfig

    from awrs.constraints.smiles import unclosed_smiles

    bundled = Path(RDConfig.RDDataDir) / "NCI" / "first_200.props.sdf"
    if not bundled.is_file():
        pytest.skip("RDKit's bundled NCI molecules are absent")
    checked = 0
    for mol in Chem.SDMolSupplier(str(bundled)):
        if mol is None:
            continue
        for root in range(0, mol.GetNumAtoms(), 5):  # ring labels and branches fall elsewhere
            smiles = Chem.MolToSmiles(mol, rootedAtAtom=root, canonical=False)
            for cut in range(len(smiles) + 1):
                assert unclosed_smiles(smiles[:cut]) <= len(smiles) - cut, (smiles[:cut], smiles[cut:])
            checked += 1
    assert checked > 100


# --- the exact part kills only prefixes that cannot finish ----------------------------------


def fewest_tokens_to_finish(constraint, vocab, limit: int) -> dict[tuple[int, ...], tuple]:
    """``{prefix: (state, fewest more tokens to a complete text within the limit, or None)}`` for
    every live token prefix of at most ``limit`` tokens (by enumeration)."""
    tokens = [t for t in range(len(vocab)) if t not in vocab.special_ids]
    out: dict[tuple[int, ...], tuple[object, int | None]] = {}

    def visit(prefix: tuple[int, ...], state) -> int | None:
        best = 0 if constraint.is_complete(state) else None
        if len(prefix) < limit:
            for token in tokens:
                after = constraint.advance(state, vocab.tokens[token])
                if after is DEAD:
                    continue
                more = visit(prefix + (token,), after)
                if more is not None and (best is None or more + 1 < best):
                    best = more + 1
        out[prefix] = (state, best)
        return best

    visit((), constraint.start())
    return out


def kill_problems(constraint, vocab, limit: int, twist: BudgetTwist, *, tight: bool) -> tuple[list[str], int]:
    """Where the twist's log psi disagrees with enumeration, after every step (1 to ``limit``
    tokens written): ``-inf`` for a prefix that can still finish; with ``tight``, also a finite
    value for one that cannot. Returns the problems and the number of prefixes killed."""
    problems, kills = [], 0
    for prefix, (state, fewest) in fewest_tokens_to_finish(constraint, vocab, limit).items():
        if not prefix:
            continue  # the twist is applied after a step
        left = limit - len(prefix)
        progress = ParticleProgress(constraint.min_completion_bytes(state), 0, 0, len(prefix), left)
        log_psi = twist.log_psi(progress, vocab.max_token_bytes)
        kills += log_psi == -math.inf
        text = vocab.decode(prefix)
        if log_psi == -math.inf and fewest is not None:
            problems.append(f"{text!r} killed with {left} tokens left, completable in {fewest}")
        if tight and log_psi > -math.inf and fewest is None:
            problems.append(f"{text!r} kept with {left} tokens left though it cannot finish")
        if log_psi > 0 or math.isnan(log_psi):
            problems.append(f"{text!r}: log psi {log_psi}")
    return problems, kills


def vocabulary(*tokens) -> awrs.Vocabulary:
    return TableModel([*tokens, "<eos>"], lambda c: [1.0] * (len(tokens) + 1), eos=len(tokens)).vocab


# after 'b' four bytes are needed: with 3 tokens left (of 4) the particle cannot finish
TIGHT_PATTERN = "a{3}b|(ab|c)+|ba{4}"
ARRAY_OF_INTEGERS = {"type": "array", "items": {"type": "integer"}}
OBJECT = {"type": "object", "properties": {"a": {"type": "boolean"}, "b": {"type": "array"}}}
KILL_CASES = {
    # one byte per token and the automaton's exact distances: killed exactly when it cannot finish
    "regex-one-byte-tokens": (lambda: Regex(TIGHT_PATTERN), ("a", "b", "c"), 4, True),
    "regex-multibyte-tokens": (lambda: Regex("a+b{4}"), ("a", "b", "bb"), 5, False),
    "regex-backtracking-utf-8": (lambda: Regex("é+", engine="backtracking"), (b"\xc3", b"\xa9", "e"), 3,
                                 False),
    # after a lone lead byte, 'é' still needs 3 bytes: more than the one token of 2 bytes left
    "regex-automaton-utf-8": (lambda: Regex("é{2}|e", engine="automaton"), (b"\xc3", b"\xa9", "e", "é"), 2,
                              False),
    "all": (lambda: All(Regex("a{3}b|(ab|c)+"), Regex("[abc]{2,}")), ("a", "b", "c", "ab"), 5, False),
    "json-array": (lambda: JsonSchema(ARRAY_OF_INTEGERS), ("[", "]", "1", ",", "1]", "[1"), 5, False),
    "json-object": (lambda: JsonSchema(OBJECT), ("{", "}", '"a"', '"b":', ":", "[", "]", "tr", "ue", ","), 5,
                    False),
}


@pytest.mark.parametrize("soft", [False, True], ids=["exact", "on"])
@pytest.mark.parametrize("case", KILL_CASES)
def test_the_exact_part_never_kills_a_prefix_that_can_finish(case, soft):
    make, tokens, limit, tight = KILL_CASES[case]
    problems, kills = kill_problems(make(), vocabulary(*tokens), limit, BudgetTwist(soft=soft), tight=tight)
    assert problems == []
    assert kills > 0  # the limit binds somewhere in every case


class OffByOneTwist(BudgetTwist):
    """Broken: also kills a prefix whose tokens left hold exactly the bytes it needs."""

    def log_psi(self, progress, max_token_bytes):
        if 0 < progress.needed_bytes >= progress.left * max_token_bytes:
            return -math.inf
        return super().log_psi(progress, max_token_bytes)


class OneByteTwist(BudgetTwist):
    """Broken: counts every token as one byte (ignores ``max_token_bytes``)."""

    def log_psi(self, progress, max_token_bytes):
        return super().log_psi(progress, 1)


@pytest.mark.parametrize("broken", [OffByOneTwist, OneByteTwist])
def test_a_twist_that_kills_too_much_is_caught_by_the_enumeration(broken):
    make, tokens, limit, tight = KILL_CASES["regex-multibyte-tokens"]
    problems, _ = kill_problems(make(), vocabulary(*tokens), limit, broken(soft=False), tight=tight)
    assert problems


def test_smc_kills_exactly_the_particles_that_cannot_finish(monkeypatch):
    """Every particle SMC hands to the twist is recorded with its constraint state; the tokens
    it has written are counted by the steps. On one-byte tokens (where the automaton's bound
    is exact), it is killed exactly when no completion fits in the tokens left."""
    model, limit = hashed_model(seed=21), 4
    constraint = Regex(TIGHT_PATTERN)
    tokens = [t for t in range(len(model.vocab)) if t not in model.vocab.special_ids]
    fewest: dict = {}

    def can_finish(state, left: int) -> bool:
        key = (state, left)
        if key not in fewest:
            afters = (constraint.advance(state, model.vocab.tokens[t]) for t in tokens)
            fewest[key] = constraint.is_complete(state) or left > 0 and any(
                after is not DEAD and can_finish(after, left - 1) for after in afters)
        return fewest[key]

    for mode in ("exact", "on"):
        records, steps, last_state = [], [0], []

        class Recording(BudgetTwist):
            def log_psi(self, progress, max_token_bytes):
                value = super().log_psi(progress, max_token_bytes)
                records.append((last_state[-1], steps[0] + 1, value, progress))
                return value

        original = Regex.min_completion_bytes

        def recorded(self, state):
            last_state.append(state)
            return original(self, state)

        monkeypatch.setattr(awrs.smc.step, "BudgetTwist", Recording)
        monkeypatch.setattr(Regex, "min_completion_bytes", recorded)

        def count(particles):
            steps[0] += 1

        config = SMCConfig(particles=400, max_tokens=limit, ess_threshold=0.9, budget_twist=mode)
        run_smc(model, [], constraint, AWRS(), config, np.random.default_rng(0), on_step=count)
        monkeypatch.undo()
        for state, written, _, progress in records:  # each record pairs a state with its own progress
            assert progress.needed_bytes == constraint.min_completion_bytes(state)
            assert (progress.tokens, progress.left) == (written, limit - written)
        killed = [(state, written) for state, written, value, _ in records if value == -math.inf]
        kept = [(state, written) for state, written, value, _ in records if value > -math.inf]
        assert any(written < limit for _, written in killed)  # killed before the limit itself
        assert all(not can_finish(state, limit - written) for state, written in killed), mode
        assert all(can_finish(state, limit - written) for state, written in kept), mode
        # particles kept with exactly as many tokens left as bytes needed: the boundary was tested
        assert any(constraint.min_completion_bytes(state) == limit - written > 0 for state, written in kept)


# --- SMC where the token limit binds ----------------------------------------------------------


def _boundary_model() -> TableModel:
    return TableModel(["a", "b", "bb", "<eos>"], lambda c: [0.45, 0.1, 0.35, 0.1], eos=3)


def _json_model() -> TableModel:
    """'[' first; after a closing bracket mostly EOS; inside the array, items and commas."""

    def next_probs(context):
        if not context:
            return [0.9, 0.02, 0.04, 0.02, 0.01, 0.01]
        if context[-1] in (1, 4):
            return [0.02, 0.02, 0.02, 0.02, 0.02, 0.9]
        return [0.02, 0.15, 0.3, 0.35, 0.15, 0.03]

    return TableModel(["[", "]", "1", ",", "1]", "<eos>"], next_probs, eos=5)


def _half_character_model() -> TableModel:
    return TableModel([b"\xc3", b"\xa9", b"e", b"<eos>"], lambda c: [0.4, 0.3, 0.2, 0.1], eos=3)


LIMITED_CASES: dict[str, tuple[Callable, Callable, int]] = {
    # "aabbbb" takes all 4 tokens (a a bb bb); a third 'a' leaves no room for the b's
    "regex-multibyte-tokens": (_boundary_model, lambda: Regex("a+b{4}"), 4),
    # "[1,1]" fits in 4 tokens only through the two-byte "1]"
    "json-array": (_json_model, lambda: JsonSchema(ARRAY_OF_INTEGERS), 4),
    # a character split across tokens that the limit cuts in half
    "utf-8-backtracking": (_half_character_model, lambda: Regex("é+", engine="backtracking"), 3),
}


def likelihoods(model, constraint, *, budget_twist: str, runs: int = 600, particles: int = 3, max_tokens: int,
                ess: float = 0.9, resample_power: float = 1.0) -> np.ndarray:
    config = SMCConfig(particles=particles, max_tokens=max_tokens, ess_threshold=ess,
                       budget_twist=budget_twist, resample_power=resample_power)
    populations = (run_smc(model, [], constraint, AWRS(), config, np.random.default_rng(seed))
                   for seed in range(runs))
    return np.array([float(np.mean(np.exp(population.log_weights))) for population in populations])


def bias_in_standard_errors(case: str, budget_twist: str, resample_power: float = 1.0) -> float:
    """|mean estimate - P(constraint, |x| <= L)| over 600 seeded runs, in standard errors."""
    make_model, make_constraint, limit = LIMITED_CASES[case]
    model, constraint = make_model(), make_constraint()
    truth = sum(exact_target(model, [], constraint, limit).values())
    values = likelihoods(model, constraint, budget_twist=budget_twist, max_tokens=limit,
                         resample_power=resample_power)
    se = values.std(ddof=1) / math.sqrt(len(values))
    return abs(values.mean() - truth) / (se + 1e-15)


@pytest.mark.parametrize("case", LIMITED_CASES)
def test_the_token_limit_binds_in_each_case(case):
    make_model, make_constraint, limit = LIMITED_CASES[case]
    model, constraint = make_model(), make_constraint()
    within = exact_target(model, [], constraint, limit)
    beyond = exact_target(model, [], constraint, limit + 3)
    assert 0 < sum(within.values()) < sum(beyond.values()) - 1e-3
    assert set(beyond) - set(within)  # valid texts that need more tokens than the limit


# (budget twist, resample power): the twists alone, and with tempered resampling
SETTINGS = [("on", 1.0), ("exact", 1.0), ("off", 1.0), ("on", 0.3), ("exact", 0.0), ("off", 0.5)]


@pytest.mark.parametrize("budget_twist, resample_power", SETTINGS)
@pytest.mark.parametrize("case", LIMITED_CASES)
def test_likelihood_is_unbiased_for_the_length_limited_probability(case, budget_twist, resample_power):
    assert bias_in_standard_errors(case, budget_twist, resample_power) <= 5


@pytest.mark.parametrize("budget_twist, resample_power", SETTINGS)
@pytest.mark.parametrize("case", LIMITED_CASES)
def test_posterior_matches_the_truncated_target(case, budget_twist, resample_power):
    make_model, make_constraint, limit = LIMITED_CASES[case]
    model, constraint = make_model(), make_constraint()
    target = normalize(exact_target(model, [], constraint, limit))
    result = awrs.generate(model, [], constraint, particles=3000, max_tokens=limit, seed=7, ess_threshold=0.9,
                           budget_twist=budget_twist, resample_power=resample_power)
    posterior = {text.encode(): p for text, p in result.posterior.items()}
    assert set(posterior) <= set(target)
    assert total_variation(posterior, target) < 0.04
    if budget_twist == "off":
        assert result.stats.budget_kills == 0
    else:
        assert result.stats.budget_kills > 0


# --- broken twists fail the same checks -----------------------------------------------------


def _twist_internals() -> tuple[str, str]:
    """The names, inside awrs.smc.step, of the step that puts the twist in the weights and of the
    per-particle array of the twist currently in them (this test breaks that step on purpose)."""
    fields = awrs.smc.step.Particles.__dataclass_fields__
    if not hasattr(awrs.smc.step.Run, "_apply_twists") or "resampling_twists" not in fields:
        pytest.fail("awrs.smc.step no longer has the twist step this mutation test patches: update the test")
    return "_apply_twists", "resampling_twists"


@pytest.mark.parametrize("budget_twist, resample_power", [("on", 1.0), ("off", 0.5)])
def test_a_twist_not_taken_back_is_caught_by_the_unbiasedness_check(monkeypatch, budget_twist, resample_power):
    """If each step's log psi (budget or tempering) stayed in the weight (never subtracted, not
    even at EOS), the estimate would be biased: the check must see it."""
    method, array = _twist_internals()
    apply = getattr(awrs.smc.step.Run, method)

    def never_taken_back(run):
        before, stepped = getattr(run.particles, array).copy(), run.active.copy()
        apply(run)
        for i in stepped:
            if run.particles.log_weights[i] > -math.inf:
                run.particles.log_weights[i] += before[i]  # undo the take-back

    monkeypatch.setattr(awrs.smc.step.Run, method, never_taken_back)
    assert bias_in_standard_errors("regex-multibyte-tokens", budget_twist, resample_power) > 5


class StalledKillTwist(BudgetTwist):
    """Broken: a soft part that gives up (-inf) on a particle whose bound stopped shrinking."""

    def log_psi(self, progress, max_token_bytes):
        if self.soft and progress.needed_bytes > 0 and progress.stall > 0:
            return -math.inf
        return super().log_psi(progress, max_token_bytes)


@pytest.mark.parametrize("broken, budget_twist", [(OffByOneTwist, "exact"), (OneByteTwist, "exact"),
                                                  (StalledKillTwist, "on")])
def test_a_twist_that_kills_completable_prefixes_is_caught_by_the_smc_checks(monkeypatch, broken,
                                                                             budget_twist):
    monkeypatch.setattr(awrs.smc.step, "BudgetTwist", broken)
    assert bias_in_standard_errors("regex-multibyte-tokens", budget_twist) > 5
    model, constraint = _boundary_model(), Regex("a+b{4}")
    target = normalize(exact_target(model, [], constraint, 4))
    result = awrs.generate(model, [], constraint, particles=3000, max_tokens=4, seed=7, ess_threshold=0.9,
                           budget_twist=budget_twist)
    posterior = {text.encode(): p for text, p in result.posterior.items()}
    assert total_variation(posterior, target) >= 0.04


# --- reporting -------------------------------------------------------------------------------


def _only_a_model() -> TableModel:
    return TableModel(["a", "b", "<eos>"], lambda c: [0.9, 0.05, 0.05], eos=2)


def test_particles_that_cannot_finish_are_counted_and_reported():
    """After one 'a', 'a{6}' needs five more bytes and only three one-byte tokens are left: every
    particle is dropped at the first step, and the message says why."""
    result = awrs.generate(_only_a_model(), [], Regex("a{6}"), particles=8, max_tokens=4, seed=0)
    assert result.samples == [] and result.posterior == {}
    assert result.log_marginal_likelihood == -math.inf
    assert result.stats.budget_kills == 8 and result.stats.truncated == 0 and result.stats.dead_ends == 0
    assert result.stats.steps == 1
    assert "8 could not have finished in the tokens they had left" in result.message
    assert "max_tokens" in result.message


@pytest.mark.parametrize("setting", [{"budget_twist": "off"}, {"ess_threshold": 0.0}])
def test_without_the_twist_the_same_particles_are_truncated_at_the_limit(setting):
    result = awrs.generate(_only_a_model(), [], Regex("a{6}"), particles=8, max_tokens=4, seed=0, **setting)
    assert result.samples == [] and result.stats.budget_kills == 0
    assert result.stats.truncated == 8 and result.stats.steps == 5
    assert "could not have finished" not in result.message and "max_tokens" in result.message


def test_the_message_counts_the_final_particles_not_the_deaths_along_the_way():
    """'b' is a dead end ('bc' has no 'c' token) and 'a{10}' cannot fit in 4 tokens: resampling
    replaces the particles that died at 'b' with copies of 'a' lineages, which then die at the
    limit, so there are more deaths than particles; the message describes the 8 particles."""
    model = TableModel(["a", "b", "<eos>"], lambda c: [0.5, 0.45, 0.05], eos=2)
    result = awrs.generate(model, [], Regex("a{10}|bc"), particles=8, max_tokens=4, seed=0,
                           budget_twist="off")
    assert result.stats.dead_ends > 0 and result.stats.dead_ends + result.stats.truncated > 8
    assert result.message.endswith("of 8 particles, 8 were incomplete at max_tokens (raise max_tokens); "
                                   "the furthest particle wrote 'aaaa'")


def test_budget_twist_names_are_checked():
    with pytest.raises(ConfigError, match="budget twist"):
        SMCConfig(budget_twist="soft")
    with pytest.raises(ConfigError, match="budget twist"):
        awrs.generate(_only_a_model(), [], Regex("a"), particles=2, max_tokens=2, budget_twist="maybe")
    assert BudgetTwist.named("off") is None
    assert BudgetTwist.named("exact") == BudgetTwist(soft=False)


def lineage_model() -> TableModel:
    """Particles die at dead ends ("ccc" can only go on with "b", which has no mass there), and
    their paths carry different weights ("a" keeps more of the valid mass than "c")."""
    tokens = ["a", "b", "c", "<eos>"]

    def next_probs(context):
        text = "".join(tokens[t] for t in context)
        if text.endswith("ccc"):
            return [0.5, 0.0, 0.2, 0.3]
        if text.endswith("a"):
            return [0.5, 0.1, 0.1, 0.3]
        return [0.1, 0.1, 0.4, 0.4]

    return TableModel(tokens, next_probs, eos=3)


def dropped_living_particles(resample_power: float, seeds: range) -> tuple[int, int]:
    """Across runs: how many resamplings there were, and how many particles still alive they dropped."""
    dropped = resamplings = 0
    for seed in seeds:
        steps: list[dict] = []
        awrs.generate(lineage_model(), [], Regex("[ac]{1,4}b"), particles=6, max_tokens=8, seed=seed,
                      budget_twist="off", resample_power=resample_power, ess_threshold=0.99,
                      on_step=lambda particles: steps.append(particles.last_step))
        for step in steps:
            if step["parents"] is None:
                continue
            resamplings += 1
            living = {i for i, (token, _) in step["drawn"].items() if token not in (-1, 3)}
            dropped += len(living - set(step["parents"]))
    return resamplings, dropped


def test_resample_power_zero_only_replaces_the_dead():
    """At power 0 resampling copies living particles into the places of dead ones and never
    drops a living one, so every independent chance to finish that LCD would have is kept:
    its valid rate is at least LCD's. At power 1 living lineages are dropped."""
    resamplings, dropped = dropped_living_particles(0.0, range(40))
    assert resamplings >= 10 and dropped == 0
    assert dropped_living_particles(1.0, range(40))[1] > 0
