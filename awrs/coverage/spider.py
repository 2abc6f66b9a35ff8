"""Coverage of the grammar constraints on Spider: gold queries accepted, corrupted ones rejected.

For a folder in the Spider layout (``dev.json``, ``grammars/<db>.lark``, ``database/<db>/
<db>.sqlite``), :func:`spider_coverage` checks, per database:

* every gold query is accepted with **all its prefixes**: fed one byte at a time (every byte
  prefix, so every character prefix too, must stay alive) and complete at the end;
* corrupted queries are **rejected**: a misspelled keyword, a column name that is not in the
  schema, and a query cut inside a word and finished with garbage. A corruption that SQLite
  still prepares (a misspelling that happens to be valid) is not counted. "Rejected early"
  counts corruptions rejected before their last byte (by the prefix check);
* speed: the query is fed again in token-sized pieces (1-6 characters, seeded, or the pieces
  of a tokenizer) and each ``advance`` is timed: p50 and p99 in microseconds.

``constraint="grammar"`` checks the shipped grammar of each database with
:class:`~awrs.constraints.Grammar` (the grammar's language alone); ``constraint="sql"`` checks
:class:`~awrs.constraints.Sql` with the grammar it builds from the database schema, and
``"sql-shipped"`` :class:`~awrs.constraints.Sql` with the shipped grammar (both add SQLite's
prepare of the finished query).

:func:`format_spider_coverage` turns the JSON-ready report into a text table.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..constraints.base import DEAD
from ..errors import ConfigError

KEYWORDS = (
    "SELECT",
    "FROM",
    "WHERE",
    "JOIN",
    "GROUP",
    "ORDER",
    "COUNT",
    "HAVING",
    "LIMIT",
    "DISTINCT",
    "AND",
)
GARBAGE = "#@!?~`$^"
CORRUPTION_KINDS = ("keyword", "column", "truncated")
CONSTRAINTS = ("grammar", "sql", "sql-shipped")

Pieces = Callable[[str], Sequence[bytes]]


def char_pieces(seed: int = 0, low: int = 1, high: int = 6) -> Pieces:
    """Split texts into pieces of ``low``-``high`` characters (seeded per text)."""

    def split(text: str) -> list[bytes]:
        rng = random.Random(f"{seed}:{text}")
        out, i = [], 0
        while i < len(text):
            k = rng.randint(low, high)
            out.append(text[i : i + k].encode("utf-8"))
            i += k
        return out

    return split


def embedded_tokenizer_pieces() -> Pieces | None:
    """Token pieces of the embedded model's tokenizer, if it is already converted (else None).

    Loads only ``tokenizer.json`` from the awrs cache (no model, nothing downloaded).
    """
    try:
        from tokenizers import Tokenizer

        from ..models.embedded import converted_path, embedded_gguf_path

        path = converted_path(embedded_gguf_path()) / "tokenizer.json"
        if not path.is_file():
            return None
        tokenizer = Tokenizer.from_file(str(path))
    except Exception:  # noqa: BLE001 - optional: fall back to character pieces
        return None

    def split(text: str) -> list[bytes]:
        encoding = tokenizer.encode(text, add_special_tokens=False)
        pieces = []
        for start, end in encoding.offsets:
            if end > start:
                pieces.append(text[start:end].encode("utf-8"))
        joined = b"".join(pieces)
        return pieces if joined == text.encode("utf-8") else char_pieces()(text)

    return split


def _schema_names(db_path: Path) -> tuple[list[str], list[str]]:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        columns = []
        for t in tables:
            quoted = '"' + t.replace('"', '""') + '"'
            columns += [r[1] for r in conn.execute(f"PRAGMA table_info({quoted})")]
        return tables, columns
    finally:
        conn.close()


def corruptions(
    query: str, columns: Sequence[str], tables: Sequence[str], rng: random.Random
) -> list[tuple[str, str]]:
    """Corrupted variants of ``query``: (kind, text) for each kind that applies."""
    out = []
    # a misspelled keyword: drop, double or replace one inner letter
    spots = [m for m in re.finditer(r"[A-Za-z]+", query) if m.group(0).upper() in KEYWORDS]
    if spots:
        m = rng.choice(spots)
        word = m.group(0)
        i = rng.randrange(1, len(word))
        variant = rng.choice(
            [word[:i] + word[i + 1 :], word[:i] + "q" + word[i:], word[:i] + "x" + word[i + 1 :]]
        )
        out.append(("keyword", query[: m.start()] + variant + query[m.end() :]))
    # a column name that is not in the schema
    lowered = {c.lower() for c in columns} | {t.lower() for t in tables}
    names = [
        m
        for m in re.finditer(r"[A-Za-z_][A-Za-z0-9_]*", query)
        if m.group(0).lower() in {c.lower() for c in columns} and m.group(0).upper() not in KEYWORDS
    ]
    if names:
        m = rng.choice(names)
        for suffix in ("zq", "xzq", "_qzx"):
            fake = m.group(0) + suffix
            if fake.lower() not in lowered:
                break
        out.append(("column", query[: m.start()] + fake + query[m.end() :]))
    # cut inside a word, then garbage
    words = [m for m in re.finditer(r"[A-Za-z_]{3,}", query)]
    if words:
        m = rng.choice(words)
        cut = rng.randrange(m.start() + 1, m.end())
        garbage = "".join(rng.choice(GARBAGE) for _ in range(rng.randint(2, 5)))
        out.append(("truncated", query[:cut] + garbage))
    return out


def _feed_bytes(constraint, data: bytes) -> tuple[object, int]:
    """Feed one byte at a time; return the final state and how many bytes were accepted."""
    state = constraint.start()
    for i in range(len(data)):
        state = constraint.advance(state, data[i : i + 1])
        if state is DEAD:
            return DEAD, i
    return state, len(data)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def spider_coverage(
    data_dir: str | Path,
    *,
    constraint: str = "grammar",
    databases: Sequence[str] | None = None,
    limit: int | None = None,
    pieces: Pieces | str | None = "chars",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Check gold and corrupted Spider queries against their database's constraint.

    Args:
        data_dir: a folder with ``dev.json``, ``grammars/`` and ``database/``.
        constraint: ``"grammar"`` (the shipped grammar of each database), ``"sql"``
            (:class:`~awrs.constraints.Sql`: schema grammar and SQLite's prepare) or
            ``"sql-shipped"`` (Sql with the shipped grammar).
        databases: only these database ids (default: all in dev.json).
        limit: at most this many gold queries per database.
        pieces: how queries are cut for timing: ``"chars"`` (1-6 characters),
            ``"tokenizer"`` (the embedded model's tokenizer when its cache exists, else
            characters), or a function ``str -> [bytes]``.
        seed: seeds the pieces and the corruptions.
        progress: called with a line of text after each database.

    Returns a JSON-ready dict: ``databases`` (per database counts, failures and timings),
    ``totals``, ``timing`` (p50/p99 microseconds per advance and per byte), ``settings``.
    """
    from ..constraints.grammar import Grammar
    from ..constraints.grammar.sql import ReadOnlyDatabase, Sql

    root = Path(data_dir)
    dev_path = root / "dev.json"
    if not dev_path.is_file():
        raise ConfigError(f"no dev.json in {str(root)!r} (expected the Spider layout)")
    if constraint not in CONSTRAINTS:
        raise ConfigError(f"unknown constraint {constraint!r}; choose one of {', '.join(CONSTRAINTS)}")
    examples = json.loads(dev_path.read_text(encoding="utf-8"))
    by_db: dict[str, list[str]] = {}
    for ex in examples:
        by_db.setdefault(ex["db_id"], []).append(ex["query"])
    if databases is not None:
        unknown = sorted(set(databases) - set(by_db))
        if unknown:
            raise ConfigError(f"databases not in dev.json: {', '.join(unknown)}")
        by_db = {db: by_db[db] for db in databases}
    if pieces == "chars" or pieces is None:
        split, pieces_name = char_pieces(seed), "1-6 characters"
    elif pieces == "tokenizer":
        split = embedded_tokenizer_pieces()
        pieces_name = "embedded tokenizer"
        if split is None:
            split, pieces_name = char_pieces(seed), "1-6 characters (embedded tokenizer not converted yet)"
    elif callable(pieces):
        split, pieces_name = pieces, getattr(pieces, "__name__", "custom")
    else:
        raise ConfigError(f"pieces must be 'chars', 'tokenizer' or a function, got {pieces!r}")

    started = time.perf_counter()
    report_dbs: dict[str, dict] = {}
    all_advance: list[float] = []
    all_per_byte: list[float] = []
    for db in sorted(by_db):
        queries = by_db[db][:limit] if limit else by_db[db]
        db_path = root / "database" / db / f"{db}.sqlite"
        grammar_path = root / "grammars" / f"{db}.lark"
        entry: dict = {"gold": len(queries)}
        t0 = time.perf_counter()
        try:
            if constraint == "grammar":
                checker = Grammar(grammar_path.read_text(encoding="utf-8"))
            elif constraint == "sql":
                checker = Sql(db_path)
            else:
                checker = Sql(db_path, grammar=grammar_path.read_text(encoding="utf-8"))
        except (OSError, ConfigError) as err:
            entry["error"] = str(err)
            report_dbs[db] = entry
            continue
        entry["load_seconds"] = round(time.perf_counter() - t0, 3)
        tables, columns = _schema_names(db_path) if db_path.is_file() else ([], [])
        conn = (
            checker.database
            if constraint != "grammar"
            else (ReadOnlyDatabase(db_path) if db_path.is_file() else None)
        )

        accepted = 0
        failures = []
        advance_us: list[float] = []
        for query in queries:
            data = query.encode("utf-8")
            state, ok_bytes = _feed_bytes(checker, data)
            complete = state is not DEAD and checker.is_complete(state)
            if complete:
                accepted += 1
            elif len(failures) < 5:
                where = "end (incomplete)" if state is not DEAD else f"byte {ok_bytes}"
                failures.append({"query": query, "rejected_at": where})
            # timing in token-sized pieces
            state = checker.start()
            for piece in split(query):
                t = time.perf_counter()
                state = checker.advance(state, piece)
                dt = (time.perf_counter() - t) * 1e6
                advance_us.append(dt)
                all_advance.append(dt)
                all_per_byte.append(dt / max(len(piece), 1))
                if state is DEAD:
                    break
        entry["gold_accepted"] = accepted
        entry["gold_failures"] = failures

        rng = random.Random(f"{seed}:{db}")
        counts = {
            kind: {"total": 0, "rejected": 0, "rejected_early": 0, "skipped_valid": 0}
            for kind in CORRUPTION_KINDS
        }
        missed = []
        for query in queries:
            for kind, text in corruptions(query, columns, tables, rng):
                c = counts[kind]
                if conn is not None and conn.prepares(text):
                    c["skipped_valid"] += 1
                    continue
                c["total"] += 1
                data = text.encode("utf-8")
                state, ok_bytes = _feed_bytes(checker, data)
                rejected = state is DEAD or not checker.is_complete(state)
                if rejected:
                    c["rejected"] += 1
                    if state is DEAD:
                        c["rejected_early"] += 1
                elif len(missed) < 5:
                    missed.append({"kind": kind, "query": text})
        entry["corrupted"] = counts
        entry["corrupted_total"] = sum(c["total"] for c in counts.values())
        entry["corrupted_rejected"] = sum(c["rejected"] for c in counts.values())
        entry["corrupted_rejected_early"] = sum(c["rejected_early"] for c in counts.values())
        entry["corrupted_accepted_examples"] = missed
        entry["advance_us_p50"] = _round(_percentile(advance_us, 0.5))
        entry["advance_us_p99"] = _round(_percentile(advance_us, 0.99))
        report_dbs[db] = entry
        if progress is not None:
            progress(
                f"{db}: gold {accepted}/{len(queries)}, corrupted rejected "
                f"{entry['corrupted_rejected']}/{entry['corrupted_total']}, "
                f"p50 {entry['advance_us_p50']} us"
            )

    ok = [e for e in report_dbs.values() if "error" not in e]
    totals = {
        "databases": len(report_dbs),
        "databases_failed_to_load": len(report_dbs) - len(ok),
        "gold": sum(e["gold"] for e in ok),
        "gold_accepted": sum(e["gold_accepted"] for e in ok),
        "corrupted": sum(e["corrupted_total"] for e in ok),
        "corrupted_rejected": sum(e["corrupted_rejected"] for e in ok),
        "corrupted_rejected_early": sum(e["corrupted_rejected_early"] for e in ok),
    }
    by_kind = {}
    for kind in CORRUPTION_KINDS:
        by_kind[kind] = {
            key: sum(e["corrupted"][kind][key] for e in ok)
            for key in ("total", "rejected", "rejected_early", "skipped_valid")
        }
    totals["corrupted_by_kind"] = by_kind
    return {
        "settings": {
            "data": str(root),
            "constraint": constraint,
            "pieces": pieces_name,
            "seed": seed,
            "limit": limit,
        },
        "databases": report_dbs,
        "totals": totals,
        "timing": {
            "advances": len(all_advance),
            "advance_us_p50": _round(_percentile(all_advance, 0.5)),
            "advance_us_p99": _round(_percentile(all_advance, 0.99)),
            "per_byte_us_p50": _round(_percentile(all_per_byte, 0.5)),
            "total_seconds": round(time.perf_counter() - started, 2),
        },
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def format_spider_coverage(report: dict) -> str:
    """A text table of a :func:`spider_coverage` report."""
    s = report["settings"]
    lines = [
        f"spider coverage · constraint {s['constraint']} · pieces: {s['pieces']} · {s['data']}",
        f"{'database':32} {'gold ok':>11} {'corrupt rej':>12} {'early':>6} {'p50 us':>8} {'p99 us':>8} {'load s':>7}",
    ]
    for db, e in report["databases"].items():
        if "error" in e:
            lines.append(f"{db:32} error: {e['error']}")
            continue
        lines.append(
            f"{db:32} {e['gold_accepted']:>5}/{e['gold']:<5} {e['corrupted_rejected']:>5}/{e['corrupted_total']:<6}"
            f" {e['corrupted_rejected_early']:>6} {_fmt(e['advance_us_p50']):>8} {_fmt(e['advance_us_p99']):>8}"
            f" {e['load_seconds']:>7.2f}"
        )
    t = report["totals"]
    timing = report["timing"]
    lines.append(
        f"{'total':32} {t['gold_accepted']:>5}/{t['gold']:<5} {t['corrupted_rejected']:>5}/{t['corrupted']:<6}"
        f" {t['corrupted_rejected_early']:>6} {_fmt(timing['advance_us_p50']):>8} {_fmt(timing['advance_us_p99']):>8}"
    )
    kinds = ", ".join(
        f"{kind} {v['rejected']}/{v['total']} (early {v['rejected_early']}, skipped as valid {v['skipped_valid']})"
        for kind, v in t["corrupted_by_kind"].items()
    )
    lines.append(f"corruptions rejected: {kinds}")
    lines.append(
        f"{timing['advances']} timed advances; p50 {_fmt(timing['per_byte_us_p50'])} us per byte; "
        f"{timing['total_seconds']} s in all"
    )
    failures = [(db, f) for db, e in report["databases"].items() for f in e.get("gold_failures", [])]
    for db, f in failures[:10]:
        lines.append(f"gold rejected ({db}, {f['rejected_at']}): {f['query']}")
    missed = [
        (db, m) for db, e in report["databases"].items() for m in e.get("corrupted_accepted_examples", [])
    ]
    for db, m in missed[:10]:
        lines.append(f"corruption accepted ({db}, {m['kind']}): {m['query']}")
    return "\n".join(lines)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.1f}"
