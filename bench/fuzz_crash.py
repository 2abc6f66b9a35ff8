"""Coverage-guided crash fuzzing (atheris / libFuzzer) of the constraint compilers and ``advance``.

    python bench/fuzz_crash.py {regex,json,grammar} SECONDS [--seed S] [--corpus DIR]

One input is a constraint's source text (a regex pattern, a JSON Schema, a Lark grammar) and
a text to feed it, separated by the first NUL byte. The harness compiles the source (regexes on
both engines), feeds the text in pieces whose size the input also picks, and asks every
question a sampler asks of a state (complete? which next bytes? how far from done?). A finding
is anything a user could hit:

* an exception other than awrs's typed errors (``ConfigError``/``ConstraintError``, which say
  what was wrong with the source), a ``RecursionError`` included;
* feeding in pieces disagreeing with feeding the whole text at once (dead or alive, complete
  or not): the prefix contract every sampler relies on;
* an input running longer than ``--timeout`` seconds (a hang, to libFuzzer).

The corpus starts from the project's own patterns, schemas and grammars (``--corpus`` keeps
it between runs). libFuzzer writes a crashing input to ``crash-*`` in the working folder; make
it a regression test. Exit status 0 when the time ran out with no finding.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["awrs"]):
    from awrs.constraints import Grammar, JsonSchema, Regex
    from awrs.constraints.base import DEAD
    from awrs.errors import AwrsError

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def _regex(source: str):
    return [Regex(source, engine="automaton"), Regex(source, engine="backtracking")]


def _json(source: str):
    return [JsonSchema(source)]


def _grammar(source: str):
    return [Grammar(source)]


TARGETS = {"regex": _regex, "json": _json, "grammar": _grammar}


def check(constraint, text: bytes, piece: int) -> None:
    """Feed ``text`` whole and in pieces of ``piece`` bytes; ask each state every question."""
    whole = constraint.advance(constraint.start(), text)
    state = constraint.start()
    for at in range(0, len(text), piece):
        state = constraint.advance(state, text[at: at + piece])
        if state is DEAD:
            break
        constraint.is_complete(state)
        constraint.next_bytes(state)
        if constraint.min_completion_bytes(state) < 0:
            raise AssertionError("a negative lower bound on the bytes left")
    if (state is DEAD) != (whole is DEAD):
        raise AssertionError(f"in pieces of {piece}: {'dead' if state is DEAD else 'alive'}, "
                             f"whole: {'dead' if whole is DEAD else 'alive'} ({text!r})")
    if whole is not DEAD and constraint.is_complete(state) != constraint.is_complete(whole):
        raise AssertionError(f"in pieces of {piece}, completeness differs from the whole text's ({text!r})")


def one_input(target, data: bytes) -> None:
    source, _, text = data.partition(b"\0")
    try:
        source_text = source.decode("utf-8")
    except UnicodeDecodeError:
        return
    piece = 1 + (text[0] % 8 if text else 0)
    try:
        constraints = target(source_text)
    except AwrsError:  # says what was wrong with the source: the promised behaviour
        return
    for constraint in constraints:
        try:
            check(constraint, text[1:], piece)
        except AwrsError:
            continue  # e.g. the backtracking engine's time limit: typed and documented


def seeds(kind: str) -> list[bytes]:
    """The starting corpus: sources the project works with, each with a text it accepts."""
    found: list[bytes] = []
    if kind == "regex":
        import csv

        path = SHARED / "patterns" / "patterns.csv"
        rows = list(csv.DictReader(path.open(encoding="utf-8"))) if path.is_file() else []
        for row in rows[:200]:
            pattern = row.get("pattern") or next(iter(row.values()))
            found.append(pattern.encode() + b"\0\x03" + (row.get("example") or "").encode())
        found += [b"[a-z]+@[a-z]+\\.com\0\x02ab@cd.com", b"(?=\\d{3})\\d+(a|b)\\1\0\x0012345aa"]
    elif kind == "json":
        folder = SHARED / "jsonschemabench"
        for path in sorted(folder.glob("*/*.json"))[:300] if folder.is_dir() else []:
            found.append(path.read_bytes() + b"\0\x05{}")
        found.append(json.dumps({"type": "object", "properties": {"a": {"type": "string", "maxLength": 3}},
                                 "required": ["a"]}).encode() + b'\0\x01{"a":"\\u00e9"}')
    else:
        # (The Spider grammars, ~200 KB each, take seconds to compile: too slow to mutate.)
        path = SHARED / "goal_inference" / "goal_inference.lark"
        if path.is_file():
            found.append(path.read_bytes() + b"\0\x02(on a b)")
        found.append(b'start: expr\nexpr: NUMBER | "(" expr "+" expr ")"\n%import common.NUMBER\0\x01(1+(2+3))')
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=sorted(TARGETS), help="which constraint compiler to fuzz")
    parser.add_argument("seconds", type=int, help="how long to run")
    parser.add_argument("--seed", type=int, default=0, help="libFuzzer's random seed")
    parser.add_argument("--corpus", type=Path, help="keep the corpus here between runs (default: a temporary folder)")
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take before it counts as a hang")
    args = parser.parse_args(argv)
    corpus = args.corpus or Path(tempfile.mkdtemp(prefix=f"awrs-fuzz-{args.target}-"))
    corpus.mkdir(parents=True, exist_ok=True)
    for k, seed in enumerate(seeds(args.target)):
        (corpus / f"seed-{k:04d}").write_bytes(seed)
    target = TARGETS[args.target]
    atheris.Setup([sys.argv[0], str(corpus), f"-max_total_time={args.seconds}", f"-seed={args.seed}",
                   f"-timeout={args.timeout}", "-rss_limit_mb=6144", "-print_final_stats=1"],
                  lambda data: one_input(target, data))
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
