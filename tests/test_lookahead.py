"""The constraint's look-ahead: a twist that SMC's resampling uses, never a change of target.

* SQL: which prefixes the look-ahead doubts (a column that the table behind a bound alias lacks,
  an ambiguous column once the join is closed) and which it leaves alone (a partial last word,
  an alias bound later, a second SELECT after INTERSECT); no prefix of a Spider gold query is
  doubted (shared data);
* SMC: a look-ahead that doubts valid prefixes on purpose leaves the posterior and the
  likelihood estimate exact, and it does act: resampling runs whenever it doubts some
  particles, and ``lookahead=False`` turns that off;
* the CLI options ``--lookahead on|off`` reach generate and the evaluation's records.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_sql import make_db

import awrs
from awrs.constraints import Regex
from awrs.constraints.base import Constraint, State
from awrs.constraints.grammar.sql import ReadOnlyDatabase, Sql
from awrs.constraints.grammar.sql_lookahead import names_missing_column
from awrs.errors import ConfigError
from awrs.models import TableModel
from awrs.testing import exact_target, normalize, total_variation

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> ReadOnlyDatabase:
    return ReadOnlyDatabase(make_db(tmp_path_factory.mktemp("lookahead") / "music.sqlite"))


DOUBTED = [
    # concert has no column name: the alias is bound, no continuation helps
    "SELECT T2.name FROM singer AS T1 JOIN concert AS T2 ON",
    "SELECT count(*) FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.age WHERE",
    "SELECT concert.name FROM concert WHERE",
    "SELECT name FROM singer s JOIN concert c ON s.singer_id = c.singer_id WHERE c.country ",
    # singer_id is in both tables and the join is closed
    "SELECT singer_id FROM singer JOIN concert ON singer.singer_id = concert.singer_id ORDER",
]
LEFT_ALONE = [
    "SELECT T2.name FROM singer AS T1 ",  # T2 may still be bound by a join
    "SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.sing",  # a partial word
    "SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.singer_id ",
    "SELECT singer_id FROM singer JOIN concert USING",  # USING (singer_id) resolves it
    "SELECT T1.name FROM singer AS T1 INTERSECT SELECT T1.concert_name ",  # a new SELECT, not bound yet
    "SELECT name FROM singer WHERE age > 20; ",  # the constraint judges a statement ended by ;
    "SELECT",
    "",
]


@pytest.mark.parametrize("text", DOUBTED)
def test_sql_lookahead_doubts_a_column_that_no_continuation_fixes(database, text):
    assert names_missing_column(text, database.prepare_error)


@pytest.mark.parametrize("text", LEFT_ALONE)
def test_sql_lookahead_leaves_alone_what_a_continuation_may_fix(database, text):
    assert not names_missing_column(text, database.prepare_error)


def test_sql_constraint_gives_its_penalty_and_zero_turns_it_off(database):
    text = b"SELECT T2.name FROM singer AS T1 JOIN concert AS T2 ON "
    on, off = Sql(database.path, lookahead_penalty=5.0), Sql(database.path, lookahead_penalty=0)
    assert on.lookahead_log_psi(on.advance(on.start(), text)) == -5.0
    assert off.lookahead_log_psi(off.advance(off.start(), text)) == 0.0
    fine = b"SELECT name FROM singer WHERE "
    assert on.lookahead_log_psi(on.advance(on.start(), fine)) == 0.0
    with pytest.raises(ConfigError, match="lookahead_penalty"):
        Sql(database.path, lookahead_penalty=-1)
    with pytest.raises(ConfigError, match="lookahead_penalty"):
        Sql(database.path, lookahead_penalty=math.inf)
    with pytest.raises(ConfigError, match="lookahead_penalty"):
        Sql(database.path, lookahead_penalty="5")


def test_prepare_error_names_what_sqlite_refused(database):
    assert database.prepare_error("SELECT name FROM singer") is None
    assert database.prepare_error("SELECT nope FROM singer") == "no such column: nope"
    assert database.prepares("SELECT name FROM singer") and not database.prepares("SELECT nope FROM singer")


@pytest.mark.skipif(not (SHARED / "spider" / "dev.json").is_file(), reason="needs ../shared/data/spider")
def test_no_prefix_of_a_spider_gold_query_is_doubted():
    root = SHARED / "spider"
    databases: dict[str, ReadOnlyDatabase] = {}
    prefixes = 0
    for item in json.loads((root / "dev.json").read_text(encoding="utf-8")):
        db_id, query = item["db_id"], item["query"]
        if db_id not in databases:
            databases[db_id] = ReadOnlyDatabase(root / "database" / db_id / f"{db_id}.sqlite")
        for end in (i + 1 for i, c in enumerate(query) if c == " "):
            prefixes += 1
            assert not names_missing_column(query[:end], databases[db_id].prepare_error), query[:end]
    assert prefixes > 10_000


# --- SMC: exact whatever the look-ahead says, and it acts --------------------------------------


class Doubting(Constraint):
    """``inner`` with a look-ahead that doubts, on purpose, prefixes of valid texts."""

    def __init__(self, inner: Constraint, doubtful: bytes, penalty: float = 3.0) -> None:
        self.inner, self.doubtful, self.penalty = inner, doubtful, penalty

    def start(self) -> State:
        return (self.inner.start(), b"")

    def advance(self, state: State, data: bytes) -> State:
        after = self.inner.advance(state[0], data)
        return after if after is awrs.constraints.DEAD else (after, state[1] + data)

    def is_complete(self, state: State) -> bool:
        return self.inner.is_complete(state[0])

    def lookahead_log_psi(self, state: State) -> float:
        return -self.penalty if self.doubtful in state[1] else 0.0


def _model() -> TableModel:
    return TableModel(["a", "b", "bb", "<eos>"], lambda c: [0.45, 0.1, 0.35, 0.1], eos=3)


LIMIT = 5


def _constraint() -> Doubting:
    return Doubting(Regex("a+b{2,4}"), b"aa")  # "aa..." texts are valid, and doubted on the way


def _worst_text_bias(runs: int, **options) -> float:
    """The largest |mean of Z_hat x posterior(a) - p(a) 1[a valid]| over texts a, in standard
    errors, over ``runs`` seeded runs of 4 particles."""
    model, constraint = _model(), _constraint()
    truth = exact_target(model, [], constraint, LIMIT)
    results = [awrs.generate(model, [], constraint, particles=4, max_tokens=LIMIT, seed=seed, ess_threshold=0.01,
                             **options) for seed in range(runs)]
    worst = 0.0
    for text, p in truth.items():
        estimates = np.array([r.posterior.get(text.decode(), 0.0) * math.exp(r.log_marginal_likelihood)
                              if r.log_marginal_likelihood is not None else 0.0 for r in results])
        se = estimates.std(ddof=1) / math.sqrt(len(estimates))
        worst = max(worst, abs(estimates.mean() - p) / (se + 1e-12))
    return worst


def test_a_doubting_lookahead_keeps_every_text_unbiased():
    """E[Z_hat x posterior(a)] = p(a) 1[a valid] for every text a, the doubted ones included
    (a third of the target's mass): a look-ahead that doubts valid prefixes costs variance,
    never mass."""
    model, constraint = _model(), _constraint()
    truth = exact_target(model, [], constraint, LIMIT)
    assert sum(p for text, p in truth.items() if text.startswith(b"aa")) > 0.2 * sum(truth.values())
    assert _worst_text_bias(1000) <= 5


def test_the_text_bias_check_sees_a_penalty_that_stays():
    """The same check on a penalty kept in the final weights (a critic, which changes the target)."""
    def kept(text: str, finished: bool) -> float:
        return -_constraint().penalty if "aa" in text else 0.0

    assert _worst_text_bias(300, lookahead=False, critic=kept) > 5


def test_resampling_runs_when_the_lookahead_doubts_some_particles_and_not_when_off():
    model, constraint = _model(), _constraint()
    common = dict(particles=8, max_tokens=LIMIT, ess_threshold=0.01)
    on = sum(awrs.generate(model, [], constraint, seed=s, **common).stats.resamples for s in range(20))
    off = sum(awrs.generate(model, [], constraint, seed=s, lookahead=False, **common).stats.resamples
              for s in range(20))
    assert on > off + 10, (on, off)


def test_lookahead_option_reaches_the_evaluation_records(tmp_path):
    import argparse

    from test_evaluation import FIXTURES, tiny_model

    from awrs.evaluation.cli import add_eval_arguments, eval_command
    from awrs.evaluation.runner import read_records

    parser = argparse.ArgumentParser()
    add_eval_arguments(parser)
    out = tmp_path / "r.jsonl"
    for switch in ("off", None):
        argv = ["patterns", "--data", str(FIXTURES), "--method", "awrs-smc", "--particles", "2", "--max-tokens", "3",
                "--out", str(out), "--json"] + (["--lookahead", switch] if switch else [])
        assert eval_command(parser.parse_args(argv), load=lambda _args: tiny_model(chat=True)) == 0
    records = [r for r in read_records(out) if r["status"] == "ok"]
    assert {r.get("options", {}).get("lookahead") for r in records} == {False, None}
    assert {r["settings"]["lookahead"] for r in records} == {False, True}
    with pytest.raises(SystemExit):
        parser.parse_args(["patterns", "--data", "x", "--out", "y", "--lookahead", "maybe"])
