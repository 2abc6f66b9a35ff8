"""Sql: SELECT queries valid for one SQLite database, checked on prefixes and prepared read-only.

* names: tables and columns must be the database's (prefix check), aliases and joins work,
  a column of a table that is not in FROM fails only when SQLite prepares the whole query;
* safety: the file is opened read-only, writes are refused and never run;
* errors: unknown or non-SQLite files are ConfigErrors naming the file;
* Spider: gold queries of several databases with all byte prefixes (shared data);
* the prefix contract on random strings (hypothesis).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("lark")
pytest.importorskip("llguidance")

from awrs.constraints.base import DEAD
from awrs.constraints.grammar.sql import Sql
from awrs.coverage.spider import format_spider_coverage, spider_coverage
from awrs.errors import ConfigError
from awrs.testing import bytes_accepted

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
HYPOTHESIS = settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


def make_db(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INT);
        CREATE TABLE concert (concert_id INTEGER PRIMARY KEY, concert_name TEXT, year INT,
                              singer_id INT REFERENCES singer(singer_id));
        CREATE TABLE "Home Town" ("Town Name" TEXT, "order" INT);
        INSERT INTO singer VALUES (1, 'Ann', 'France', 30), (2, 'Bo', 'Peru', 41);
        INSERT INTO concert VALUES (1, 'Live', 2014, 1);
        """
    )
    conn.commit()
    conn.close()
    return path


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    return make_db(tmp_path_factory.mktemp("sql") / "music.sqlite")


@pytest.fixture(scope="module")
def sql(db) -> Sql:
    return Sql(db)




VALID = [
    "SELECT count(*) FROM singer",
    "select name, country from singer where age > 20 order by age desc limit 1",
    "SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.singer_id WHERE T2.year = 2014",
    "SELECT s.name FROM singer s, concert c WHERE s.singer_id = c.singer_id",
    "SELECT country, count(*) AS n FROM singer GROUP BY country HAVING n > 1 ORDER BY n DESC",
    "SELECT name FROM singer WHERE singer_id IN (SELECT singer_id FROM concert) EXCEPT SELECT 'x'",
    'SELECT "Town Name", [order] FROM "Home Town"',
    "SELECT avg(age), max(age) FROM singer WHERE name LIKE 'A%' AND age BETWEEN 1 AND 99;",
    'SELECT DISTINCT country FROM singer WHERE country IS NOT NULL AND country != "Peru"',
    "SELECT CASE WHEN age > 35 THEN 'old' ELSE 'young' END FROM singer",
]


@pytest.mark.parametrize("query", VALID)
def test_valid_queries_pass_with_every_prefix(sql, query):
    assert bytes_accepted(sql, query) == len(query.encode())
    assert sql.accepts(query)


@pytest.mark.parametrize(
    "query, prefix_alive",
    [
        ("SELECT nme FROM singer", False),  # no such column anywhere: caught on the prefix
        ("SELECT name FROM singers", False),  # no such table
        ("SELEC name FROM singer", False),
        ("SELECT name FROM singer WHERE age > 'x' GROUP", True),  # unfinished
        ("SELECT concert_name FROM singer", True),  # a real column, of another table: SQLite says no
        ("SELECT name FROM singer; DELETE FROM singer", False),
        ("DELETE FROM singer", False),
        ("SELECT unknown_fn(name) FROM singer", True),  # SQLite knows its functions
        ("SELECT name FROM singer ORDER BY nosuch", True),  # could have been an alias
    ],
)
def test_invalid_queries_are_rejected(sql, query, prefix_alive):
    assert not sql.accepts(query)
    assert sql.accepts_prefix(query) == prefix_alive


def test_writes_are_never_run(db):
    # Even a grammar that accepts anything cannot get a write through.
    permissive = Sql(db, grammar="start: /(.|\\n)+/")
    for statement in [
        "DELETE FROM singer",
        "DROP TABLE singer",
        "INSERT INTO singer VALUES (3, 'C', 'X', 1)",
        "UPDATE singer SET age = 0",
        "ATTACH DATABASE ':memory:' AS x",
        "PRAGMA writable_schema = 1",
        "SELECT 1; DELETE FROM singer",
        "CREATE TABLE t (x)",
    ]:
        assert permissive.accepts_prefix(statement) == (";" not in statement)  # one statement only
        assert not permissive.accepts(statement), statement
    assert permissive.accepts("SELECT name FROM singer")
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM singer").fetchone() == (2,)
    assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master")} >= {"singer", "concert"}
    conn.close()


def test_unknown_database_is_a_config_error(tmp_path):
    missing = tmp_path / "nope.sqlite"
    with pytest.raises(ConfigError, match="nope.sqlite"):
        Sql(missing)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match="junk.sqlite"):
        Sql(junk)


def test_next_bytes_and_states(sql):
    state = sql.advance(sql.start(), b"SELECT name FROM sing")
    allowed = sql.next_bytes(state)
    assert ord("e") in allowed and ord("x") not in allowed
    done = sql.advance(state, b"er")
    assert sql.is_complete(done) and not sql.is_complete(state)


@HYPOTHESIS
@given(
    st.text(alphabet="SELCTFROMWHsingeracouty ,*()=<>'\"1", max_size=30),
    st.text(alphabet="sinager ,;", max_size=8),
)
def test_prefix_closure_on_random_strings(sql, prefix, suffix):
    if not sql.accepts_prefix(prefix):
        assert not sql.accepts(prefix + suffix)
    if sql.accepts(prefix):
        assert bytes_accepted(sql, prefix) == len(prefix.encode())


@HYPOTHESIS
@given(st.binary(max_size=40))
def test_arbitrary_bytes_never_raise(sql, data):
    state = sql.start()
    for i in range(0, len(data), 4):
        state = sql.advance(state, data[i : i + 4])
        if state is DEAD:
            return
    sql.is_complete(state)


# --- Spider ---------------------------------------------------------------------------------

SPIDER = SHARED / "spider"
needs_spider = pytest.mark.skipif(not (SPIDER / "dev.json").is_file(), reason="shared Spider data absent")


@needs_spider
def test_spider_gold_queries_pass_the_schema_grammar():
    dev = json.loads((SPIDER / "dev.json").read_text())
    checked = 0
    for db in ["concert_singer", "pets_1", "world_1", "car_1", "flight_2"]:
        constraint = Sql(SPIDER / "database" / db / f"{db}.sqlite")
        for query in [ex["query"] for ex in dev if ex["db_id"] == db][::4][:10]:
            assert bytes_accepted(constraint, query) == len(query.encode()), (db, query)
            assert constraint.accepts(query), (db, query)
            checked += 1
    assert checked >= 40


@needs_spider
def test_spider_layout_uses_the_shipped_grammar():
    constraint = Sql.spider(SPIDER / "database" / "concert_singer" / "concert_singer.sqlite")
    assert "parse" in constraint.grammar.source  # the genparse grammar's start rule
    assert constraint.accepts("SELECT count(*) FROM singer")
    assert not constraint.accepts("SELECT count(*) FROM singers")


@needs_spider
def test_coverage_report_on_two_databases():
    report = spider_coverage(SPIDER, databases=["concert_singer", "singer"], limit=6)
    totals = report["totals"]
    assert totals["gold"] == 12 and totals["gold_accepted"] == 12
    assert totals["corrupted"] > 0 and totals["corrupted_rejected"] >= totals["corrupted"] * 0.7
    assert report["timing"]["advance_us_p50"] > 0
    json.dumps(report)
    table = format_spider_coverage(report)
    assert "concert_singer" in table and "total" in table
    sql_report = spider_coverage(SPIDER, constraint="sql", databases=["singer"], limit=4)
    assert sql_report["totals"]["gold_accepted"] == 4
    assert sql_report["totals"]["corrupted_rejected"] == sql_report["totals"]["corrupted"]


def test_coverage_rejects_bad_folders(tmp_path):
    with pytest.raises(ConfigError, match="dev.json"):
        spider_coverage(tmp_path)


@pytest.mark.parametrize(
    "before, after",
    [
        ("SELECT Name FROM singer_in_concert", ";"),  # the statement is fixed and SQLite says no
        ("SELECT Name FROM singer;", ";"),  # a second (empty) statement
        ("SELECT Name FROM singer; ", "SELECT"),  # a second statement
        ("SELECT Name FROM singer;", " S"),
    ],
)
def test_a_finished_statement_that_cannot_be_the_answer_ends_the_prefix(before, after):
    # Spider's grammars take statement lists: models wrote `;;;;` to the token limit after a
    # query SQLite rejects, as long as the prefix check was the grammar's alone.
    database = SHARED / "spider" / "database" / "concert_singer" / "concert_singer.sqlite"
    if not database.is_file():
        pytest.skip(f"needs the shared Spider data at {database}")
    spider = Sql.spider(database)
    grammar = spider.grammar
    assert grammar.advance(grammar.advance(grammar.start(), before.encode()), after.encode()) is not DEAD
    assert spider.accepts_prefix(before)
    assert not spider.accepts_prefix(before + after)


@pytest.mark.parametrize("query", ["SELECT name FROM singer WHERE name = 'a;b'", "SELECT name FROM singer; ",
                                   "SELECT name FROM singer;\n"])
def test_a_semicolon_in_a_string_or_trailing_whitespace_keeps_the_query(sql, query):
    assert sql.accepts_prefix(query) and sql.accepts(query)


def test_whitespace_runs_are_bounded_outside_quotes(db):
    sql = Sql(db, max_whitespace=4)
    assert sql.accepts("SELECT name    FROM singer")
    assert not sql.accepts_prefix("SELECT name     ")  # five: a model that cannot end pads for ever
    assert not sql.accepts_prefix("SELECT name \n \n FROM")
    assert sql.accepts("SELECT name FROM singer WHERE name = 'a       b'")  # inside a string: text
    with pytest.raises(ConfigError, match="max_whitespace"):
        Sql(db, max_whitespace=0)


def test_whitespace_and_semicolon_masks_are_exact(db):
    from awrs.vocab import Vocabulary

    sql = Sql(db, max_whitespace=4)
    pieces = (b"SELECT", b" name", b" concert_name", b" FROM", b" singer", b";", b" ;", b"; ", b";\n", b" ",
              b";;", b"' ;", b" WHERE", b" =", b" 'a", b"'", b" SELECT", b"\n", b"a;b", b"   ", b"     ",
              b"  \n  ", b" x     y", b"'  ", b" AND")
    vocab = Vocabulary(pieces + (b"<eos>",), frozenset({len(pieces)}))
    checker = sql.compile(vocab)
    for text in [b"SELECT name FROM singer", b"SELECT concert_name FROM singer", b"SELECT name FROM singer;",
                 b"SELECT name FROM singer WHERE name = 'a", b"SELECT name FROM singer; ", b"SELECT name  ",
                 b"SELECT name FROM singer WHERE name = 'a   "]:
        state = sql.advance(sql.start(), text)
        assert state is not DEAD, text
        accepted = [t for t in range(len(pieces)) if sql.advance(state, pieces[t]) is not DEAD]
        assert checker.token_mask(state).tolist() == accepted, text
        assert [t for t in range(len(pieces)) if checker.accepts_token(state, t)] == accepted, text
