"""Pattern matching (paper notes §4.5): generate a string that fully matches a regex."""

from __future__ import annotations

import csv
from pathlib import Path

import regex

from ...constraints.regex import Regex
from ..base import Domain, Instance

SYSTEM = (
    "You are a helpful assistant that generates strings matching regular expressions. "
    "Only output the exact string that matches the regex pattern, nothing more."
)
FEW_SHOT = [("(ab)+", "ab"), ("(ab|cd)+", "cd"), ("[a-z]+", "hello")]


def messages(pattern: str) -> list[dict]:
    out = [{"role": "system", "content": SYSTEM}]
    for p, answer in FEW_SHOT:
        out += [{"role": "user", "content": p}, {"role": "assistant", "content": answer}]
    out.append({"role": "user", "content": pattern})
    return out


class Patterns(Domain):
    name = "patterns"
    folder = "patterns"
    max_tokens = 32
    stops = ("\n",)  # paper: tokens containing a newline end the text
    primary = "full match"

    def instances(self, data_dir: Path, *, seed: int):
        path = Path(data_dir) / "patterns.csv"
        with open(path, newline="", encoding="utf-8") as handle:
            for k, row in enumerate(csv.DictReader(handle)):
                pattern = row.get("regex")
                ident = f"pattern-{k}"
                if not pattern:
                    yield Instance(ident, skip="row has no regex")
                    continue
                yield Instance(ident, prompt=messages(pattern), chat=True,
                               data={"pattern": pattern, "in_paper_subset": row.get("in_paper_subset")})

    def constraint(self, instance: Instance):
        return Regex(instance.data["pattern"])

    def score(self, instance: Instance, text: str) -> dict:
        try:
            ok = regex.fullmatch(instance.data["pattern"], text, timeout=1.0) is not None
        except TimeoutError:
            ok = False
        return {"score": float(ok), "valid": ok}


DOMAIN = Patterns
