"""Does a constraint check get slower as the text grows? Time per token-sized advance by position.

    .venv/bin/python bench/constraint_growth.py

For each kind (JSON Schema, Lark grammar, SQL on a Spider database, regex automaton), a long
valid text is built, cut into the embedded model's tokens, and fed one token at a time from
the start; every ``advance`` is timed. Prints the median microseconds per advance in each
quarter of the text, and the last quarter over the first (1.0: flat). Three passes, the
median of each bucket kept.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import awrs
from awrs.constraints import Grammar, JsonSchema, Regex, Sql

SPIDER = Path(__file__).resolve().parents[2] / "shared" / "data" / "spider"


def cases() -> dict:
    items = [{"id": i, "name": f"item number {i}", "tags": ["a", "b"], "price": i * 1.5} for i in range(40)]
    schema = {"type": "array", "items": {"type": "object", "properties": {
        "id": {"type": "integer"}, "name": {"type": "string", "maxLength": 40},
        "tags": {"type": "array", "items": {"type": "string"}}, "price": {"type": "number"}},
        "required": ["id", "name"]}}
    grammar = 'start: sentence (" " sentence)*\nsentence: WORD (" " WORD)* "."\nWORD: /[a-z]+/'
    words = " ".join("the quick brown fox jumps over the lazy dog." for _ in range(40))
    out = {
        "json schema": (JsonSchema(schema), json.dumps(items, separators=(",", ":"))),
        "grammar": (Grammar(grammar), words),
        "regex (automaton)": (Regex(r"([a-z]+ ){3,400}[a-z]+\."), "lorem ipsum dolor sit amet " * 60 + "end."),
    }
    database = SPIDER / "database" / "concert_singer" / "concert_singer.sqlite"
    if database.is_file():
        conditions = " OR ".join(f"age = {n}" for n in range(60))
        out["sql (spider)"] = (Sql.spider(database), f"SELECT name FROM singer WHERE {conditions}")
    return out


def main() -> None:
    model = awrs.load_model()
    vocab = model.vocab
    print("| constraint | bytes | tokens | µs per advance, 1st quarter | 2nd | 3rd | 4th | 4th / 1st |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (constraint, text) in cases().items():
        assert constraint.accepts(text), name
        tokens = [vocab.tokens[t] for t in model.encode(text)]
        runs = []
        for _ in range(3):
            state, times = constraint.start(), []
            for piece in tokens:
                started = time.perf_counter()
                state = constraint.advance(state, piece)
                times.append(1e6 * (time.perf_counter() - started))
            runs.append(times)
        per_token = [statistics.median(values) for values in zip(*runs)]
        quarter = max(len(per_token) // 4, 1)
        buckets = [statistics.median(per_token[k * quarter:(k + 1) * quarter] or per_token[-1:]) for k in range(4)]
        cells = " | ".join(f"{b:.1f}" for b in buckets)
        print(f"| {name} | {len(text)} | {len(tokens)} | {cells} | {buckets[3] / buckets[0]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
