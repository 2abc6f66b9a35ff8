"""Text-to-SQL (paper notes §4.1): Spider dev questions, execution accuracy."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections import Counter
from pathlib import Path

from ...constraints.grammar import Sql
from ..base import Domain, Instance

SYSTEM = (
    "You are a coding assistant helping an analyst answer questions over business data in SQL. "
    "More specifically, the analyst provides you a database schema (tables in the database along with "
    "their column names and types) and asks a question about the data that can be solved by issuing a "
    "SQL query to the database. In response, you write the SQL statement that answers the question. "
    "You do not provide any commentary or explanation of what the code does, just the SQL statement "
    "ending in a semicolon."
)
USER = (
    "Here is a database schema:\n\n{schema}\n\nPlease write me a SQL statement that answers the "
    "following question: {question}\n\nRemember, DO NOT provide any commentary or explanation of "
    "what the code does, just the SQL statement ending in a semicolon."
)
FEW_SHOT_IDS = (10, 100, 1000)  # Spider train ids used by the paper's prompt
QUERY_SECONDS = 5.0  # per-query time limit when executing gold and predicted SQL


def serialize_schema(table: dict) -> str:
    """Table names, then ``* column (type): natural-language name`` lines, as the paper's prompt."""
    lines = []
    columns = list(zip(table["column_names_original"], table["column_types"], table["column_names"]))
    for t, name in enumerate(table["table_names_original"]):
        lines.append(f"{name}:")
        for (ti, col), ctype, (_, nl) in columns:
            if ti == t:
                lines.append(f" * {col} ({ctype}): {nl}")
    return "\n".join(lines)


def execute(db_path: Path, query: str, seconds: float = QUERY_SECONDS) -> list[tuple]:
    """Rows of ``query`` on a read-only connection; raises on error or after ``seconds``."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, check_same_thread=False)
    try:
        conn.text_factory = lambda b: b.decode("utf-8", errors="replace")
        deadline = time.monotonic() + seconds
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        return conn.execute(query).fetchall()
    finally:
        conn.close()


def _norm(value):
    if isinstance(value, float):
        return round(value, 6)
    return value


def same_results(gold_sql: str, gold: list[tuple], pred: list[tuple]) -> bool:
    """Spider-style result comparison (as the Spider test-suite evaluation compares results).

    Rows are compared as multisets, or as lists when the gold query has ORDER BY; the predicted
    columns may come in any order (``SELECT name, age`` matches ``SELECT age, name``): every
    permutation that maps each gold column to a predicted column with the same set of values
    is tried.
    """
    gold_rows = [tuple(_norm(v) for v in row) for row in gold]
    pred_rows = [tuple(_norm(v) for v in row) for row in pred]
    if len(gold_rows) != len(pred_rows):
        return False
    if not gold_rows:
        return True
    width = len(gold_rows[0])
    if len(pred_rows[0]) != width:
        return False
    ordered = re.search(r"\border\s+by\b", gold_sql, flags=re.IGNORECASE) is not None
    gold_key = gold_rows if ordered else Counter(gold_rows)
    gold_sets = [{row[i] for row in gold_rows} for i in range(width)]
    pred_sets = [{row[j] for row in pred_rows} for j in range(width)]
    options = [[j for j in range(width) if pred_sets[j] == gold_sets[i]] for i in range(width)]
    for perm in _assignments(options):
        permuted = [tuple(row[j] for j in perm) for row in pred_rows]
        if (permuted if ordered else Counter(permuted)) == gold_key:
            return True
    return False


def _assignments(options: list[list[int]], limit: int = 10_000):
    """Column permutations choosing ``options[i]`` for column i (distinct), at most ``limit``."""
    count = 0
    chosen: list[int] = []

    def walk(i: int):
        nonlocal count
        if count >= limit:
            return
        if i == len(options):
            count += 1
            yield tuple(chosen)
            return
        for j in options[i]:
            if j not in chosen:
                chosen.append(j)
                yield from walk(i + 1)
                chosen.pop()

    yield from walk(0)


class Spider(Domain):
    name = "spider"
    folder = "spider"
    max_tokens = 100
    primary = "execution accuracy"

    def __init__(self) -> None:
        self._constraints: dict[str, Sql] = {}
        self._gold_cache: dict[str, object] = {}

    def instances(self, data_dir: Path, *, seed: int):
        data_dir = Path(data_dir)
        self.root = data_dir
        dev = json.loads((data_dir / "dev.json").read_text(encoding="utf-8"))
        tables = {t["db_id"]: t for t in json.loads((data_dir / "tables.json").read_text(encoding="utf-8"))}
        all_tables = dict(tables)
        if (data_dir / "tables_all.json").is_file():
            all_tables.update({t["db_id"]: t for t in
                               json.loads((data_dir / "tables_all.json").read_text(encoding="utf-8"))})
        shots = []
        train_path = data_dir / "train_spider.json"
        if train_path.is_file():
            train = json.loads(train_path.read_text(encoding="utf-8"))
            for k in FEW_SHOT_IDS:
                if k < len(train) and train[k]["db_id"] in all_tables:
                    ex = train[k]
                    shots.append((serialize_schema(all_tables[ex["db_id"]]), ex["question"], ex["query"]))
        for k, item in enumerate(dev):
            ident = f"dev-{k}"
            try:
                db_id, question, gold = item["db_id"], item["question"], item["query"]
            except (KeyError, TypeError):
                yield Instance(ident, skip="malformed item (needs db_id, question, query)")
                continue
            db_path = data_dir / "database" / db_id / f"{db_id}.sqlite"
            if not db_path.is_file():
                yield Instance(ident, skip=f"missing database {db_id}")
                continue
            if db_id not in tables:
                yield Instance(ident, skip=f"no schema for {db_id} in tables.json")
                continue
            messages = [{"role": "system", "content": SYSTEM}]
            for schema, q, sql in shots:
                messages += [{"role": "user", "content": USER.format(schema=schema, question=q)},
                             {"role": "assistant", "content": sql.strip().rstrip(";") + ";"}]
            messages.append({"role": "user", "content": USER.format(schema=serialize_schema(tables[db_id]),
                                                                    question=question)})
            yield Instance(ident, prompt=messages, chat=True,
                           data={"db_id": db_id, "db_path": str(db_path), "gold": gold, "question": question})

    def constraint(self, instance: Instance):
        db_id = instance.data["db_id"]
        if db_id not in self._constraints:
            self._constraints[db_id] = Sql.spider(instance.data["db_path"])
        return self._constraints[db_id]

    def _gold(self, instance: Instance):
        if instance.id not in self._gold_cache:
            try:
                self._gold_cache[instance.id] = execute(Path(instance.data["db_path"]), instance.data["gold"])
            except Exception as err:  # noqa: BLE001
                self._gold_cache[instance.id] = err
        return self._gold_cache[instance.id]

    def score(self, instance: Instance, text: str) -> dict:
        gold = self._gold(instance)
        if isinstance(gold, Exception):
            raise RuntimeError(f"gold query fails: {gold}")  # noqa: TRY004 - recorded as skipped
        query = text.strip()
        try:
            pred = execute(Path(instance.data["db_path"]), query)
        except Exception:  # noqa: BLE001 - a failing or timed-out prediction scores 0
            return {"score": 0.0, "valid": False}
        return {"score": float(same_results(instance.data["gold"], gold, pred)), "valid": True}

    def close(self) -> None:
        self._constraints.clear()


DOMAIN = Spider
