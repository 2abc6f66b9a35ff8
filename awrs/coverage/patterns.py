"""Coverage of :class:`~awrs.constraints.Regex` on real regular expressions.

Data layout (see ``shared/data/README.md``): ``patterns/patterns.csv`` with the columns
``regex,in_paper_subset``, patterns in the syntax of the `regex` package (backreferences,
lookarounds, ``(?|...)``, ``\\p{..}``, set operations, recursion). :func:`patterns_coverage`
takes the data folder or the ``patterns/`` folder itself.

The file has patterns only, no texts, so the positive examples are **generated** with the
constraint itself: a seeded random walk over characters. At each step the candidates
(printable ASCII, tab and newline, the non-ASCII characters the pattern names, literally or
as ``\\uXXXX``, ``\\xHH`` or ``\\N{..}`` escapes, and a few common ones) are tried in random
order and the first one the constraint keeps alive is appended (``advance`` from the current
state, i.e. ``accepts_prefix(text + c)``); once the text is complete the walk stops with
probability 0.3 (always at 64 characters or at a dead end); a dead end that is not complete
restarts the walk. Every pattern has a budget of prefix checks (2,000), so a pattern without
a findable example (a character outside the candidates, an unsatisfiable set, ``a{500}``, a
backreference a walk of independent characters is unlikely to repeat) is reported as "no
example" instead of hanging. Up to ``examples`` distinct texts are kept per pattern. Since the
constraint under test chose them, every example is checked again with ``regex.fullmatch``.

Measured here:

* patterns read, compiled (a bad pattern raises :class:`~awrs.errors.ConfigError`) and the
  engine chosen for each (``automaton`` or ``backtracking``);
* positive examples found, and the patterns with none; walk *dead ends* (an alive,
  incomplete prefix that no candidate extends: an imprecise prefix check, as the `regex`
  package's partial matching is around lookarounds, or a needed character outside the
  candidates);
* *false rejections*: each example `regex.fullmatch` does not reject is fed one byte at a
  time and in tokens, on the pattern's engine and on the backtracking engine; every prefix
  must stay alive and the whole must be complete (the contract says there must be none);
* *disagreements*: each example's verdict on each engine against ``regex.fullmatch`` and,
  for automaton patterns, automaton against backtracking, on the automaton's examples and on
  as many found by a second walk on the backtracking engine; and the prefixes the automaton
  rejected during its walk are re-checked on the backtracking engine (a prefix that one keeps
  alive may be an automaton over-rejection, or an imprecise partial match);
* speed: each example is fed in the embedded model's tokens (when its tokenizer is cached,
  else in seeded 1-6 character pieces) and each ``advance`` is timed: p50/p99 microseconds
  for all patterns on their default engine, automaton patterns on the automaton and again on
  the backtracking engine, and backtracking patterns.

Walks and pieces are seeded per pattern (``random.Random(f"{seed}:{pattern}")``), so a
pattern's examples do not depend on ``limit`` or on the other patterns.

Entry points: :func:`patterns_coverage` (a JSON-ready dict) and
:func:`~awrs.coverage.patterns_report.format_patterns_coverage` (its text table).
"""

from __future__ import annotations

import csv
import random
import re
import time
import unicodedata
import warnings
from collections.abc import Sequence
from pathlib import Path

import regex as _regex

from ..constraints.base import DEAD
from ..constraints.regex import Regex
from ..errors import ConfigError
from .json import _token_chunker
from .spider import _percentile, char_pieces

FOLDER = "patterns"
FILE = "patterns.csv"

CHECK_BUDGET = 2000  # prefix checks per pattern for the example walk
MAX_LENGTH = 64  # characters: a walk stops (complete) or restarts here
STOP_PROBABILITY = 0.3  # stop at a complete text with this probability
REJECTED_RECHECKS = 300  # automaton-rejected prefixes re-checked on the backtracking engine, per pattern
LISTED = 50  # at most this many items in each list of the report

ASCII = [chr(c) for c in range(0x20, 0x7F)] + ["\t", "\n"]
COMMON = ["é", "ü", "ß", "ñ", "α", "Ω", "ж", "—", "€", "中", "😀"]
_ESCAPE = re.compile(r"\\(?:u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|x([0-9A-Fa-f]{2})|N\{([^}]+)\})")


def patterns_file(data_dir: str | Path) -> Path:
    """``DIR/patterns/patterns.csv``, or ``DIR/patterns.csv`` when DIR is the patterns folder."""
    data = Path(data_dir)
    for path in (data / FOLDER / FILE, data / FILE):
        if path.is_file():
            return path
    raise ConfigError(f"no {FOLDER}/{FILE} or {FILE} in {str(data)!r}")


def read_patterns(path: Path) -> list[tuple[str, bool | None]]:
    """``[(pattern, in_paper_subset)]`` from a ``regex,in_paper_subset`` CSV file."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ConfigError(f"cannot read {path}: {err}") from None
    if rows and "regex" not in rows[0]:
        raise ConfigError(f"{path} has no 'regex' column (expected the header regex,in_paper_subset)")
    out = []
    for row in rows:
        pattern = row.get("regex")
        if pattern is None:
            raise ConfigError(f"{path}: a row has no regex field")
        subset = (row.get("in_paper_subset") or "").strip()
        out.append((pattern, subset == "1" if subset in ("0", "1") else None))
    return out


def candidates(pattern: str) -> list[str]:
    """The characters a walk tries: printable ASCII, the pattern's non-ASCII ones, common ones."""
    named = [c for c in pattern if ord(c) > 0x7F]
    for match in _ESCAPE.finditer(pattern):
        if match.group(4):
            try:
                named.append(unicodedata.lookup(match.group(4)))
            except KeyError:
                pass
            continue
        code = int(next(g for g in match.groups() if g), 16)
        if 0x7F < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF:
            named.append(chr(code))
    return list(dict.fromkeys(ASCII + named + COMMON))


def find_examples(
    constraint,
    chars: Sequence[str],
    k: int,
    rng: random.Random,
    *,
    budget: int = CHECK_BUDGET,
    max_length: int = MAX_LENGTH,
    stop: float = STOP_PROBABILITY,
    rejected: list[str] | None = None,
    stats: dict | None = None,
) -> tuple[list[str], int]:
    """Up to ``k`` distinct texts ``constraint`` accepts, by a constraint-guided random walk.

    Returns (examples, prefix checks used); at most ``budget`` checks are made. With
    ``rejected`` (a list), the prefixes found dead are appended to it. With ``stats`` (a
    dict), ``"dead_ends"`` (walks that reached an alive, incomplete prefix no candidate
    extends) and ``"length_cap"`` (walks cut at ``max_length``) are counted in it.
    """
    found: list[str] = []
    checks = 0
    encoded = {c: c.encode("utf-8") for c in chars}
    while len(found) < k and checks < budget:
        state, text = constraint.start(), ""
        while checks < budget:
            complete = constraint.is_complete(state)
            if complete and (len(text) >= max_length or rng.random() < stop):
                break
            if len(text) >= max_length:
                complete = False
                if stats is not None:
                    stats["length_cap"] = stats.get("length_cap", 0) + 1
                break
            for c in rng.sample(chars, len(chars)):
                if checks >= budget:
                    break
                checks += 1
                after = constraint.advance(state, encoded[c])
                if after is not DEAD:
                    state, text = after, text + c
                    break
                if rejected is not None:
                    rejected.append(text + c)
            else:  # dead end: keep the text if it is complete, else restart
                if not complete and stats is not None:
                    stats["dead_ends"] = stats.get("dead_ends", 0) + 1
                break
        else:
            complete = False
        if complete and text not in found:
            found.append(text)
    return found, checks


def _feed(constraint, data: bytes, sizes: Sequence[int], seconds: list[float] | None = None):
    """Feed ``data`` in pieces of ``sizes`` bytes; returns (state, offset of the first DEAD or None)."""
    state = constraint.start()
    at = 0
    clock = time.perf_counter
    for size in sizes:
        started = clock()
        state = constraint.advance(state, data[at : at + size])
        if seconds is not None:
            seconds.append(clock() - started)
        at += size
        if state is DEAD:
            return DEAD, at
    return state, None


def _timing(seconds: list[float]) -> dict:
    p50, p99 = _percentile(seconds, 0.5), _percentile(seconds, 0.99)
    return {
        "advances": len(seconds),
        "p50_us": None if p50 is None else round(1e6 * p50, 2),
        "p99_us": None if p99 is None else round(1e6 * p99, 2),
    }


def _compile(pattern: str, **kwargs) -> tuple[Regex | None, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return Regex(pattern, **kwargs), ""
        except ConfigError as err:
            return None, str(err)


def patterns_coverage(
    data_dir: str | Path, *, limit: int | None = None, examples: int = 3, seed: int = 0
) -> dict:
    """Compile rates, engines, generated positive examples, false rejections and advance timings.

    Args:
        data_dir: the shared data folder (holding ``patterns/patterns.csv``) or the
            ``patterns/`` folder itself.
        limit: read at most this many patterns.
        examples: positive examples to find per pattern (at most).
        seed: seeds the walks and the fallback pieces.

    Returns a JSON-ready dict (see :func:`format_patterns_coverage`).
    """
    if examples < 1:
        raise ConfigError(f"examples must be positive, got {examples}")
    path = patterns_file(data_dir)
    rows = read_patterns(path)
    if limit is not None:
        rows = rows[:limit]
    chunker, pieces = _token_chunker(None)
    fallback = None
    if chunker is None:
        fallback = char_pieces(seed)
        pieces = "1-6 character pieces (no cached tokenizer)"

    started = time.perf_counter()
    invalid: list[dict] = []
    engines = {"automaton": 0, "backtracking": 0}
    per_pattern: list[dict] = []
    no_example: list[str] = []
    false_rejections: list[dict] = []
    disagreements: list[dict] = []
    reference_mismatches: list[dict] = []
    prefix_disagreements: list[dict] = []
    counts = {
        "false_rejections": 0,
        "engine_disagreements": 0,
        "reference_mismatches": 0,
        "prefix_disagreements": 0,
        "rejected_prefixes_rechecked": 0,
        "cross_examples": 0,
        "timeouts": 0,
    }
    subset = {"patterns": 0, "compiled": 0, "with_examples": 0}
    timing: dict[str, list[float]] = {
        "all": [],
        "automaton_on_automaton": [],
        "automaton_on_backtracking": [],
        "backtracking": [],
    }
    walks = {
        name: {"dead_ends": 0, "length_cap": 0, "patterns_with_dead_ends": 0, "examples": []}
        for name in engines
    }
    total_examples = 0
    with_all = 0
    checks_total = 0

    for pattern, in_subset in rows:
        subset["patterns"] += bool(in_subset)
        constraint, error = _compile(pattern)
        if constraint is None:
            invalid.append({"pattern": pattern, "error": error})
            continue
        subset["compiled"] += bool(in_subset)
        engine = constraint.engine
        engines[engine] += 1
        backtracking = constraint if engine == "backtracking" else _compile(pattern, engine="backtracking")[0]
        rng = random.Random(f"{seed}:{pattern}")
        rejected: list[str] | None = [] if engine == "automaton" else None
        walk: dict = {}
        chars = candidates(pattern)
        found, checks = find_examples(constraint, chars, examples, rng, rejected=rejected, stats=walk)
        checks_total += checks
        summary = walks[engine]
        summary["dead_ends"] += walk.get("dead_ends", 0)
        summary["length_cap"] += walk.get("length_cap", 0)
        if walk.get("dead_ends"):
            summary["patterns_with_dead_ends"] += 1
            if len(summary["examples"]) < LISTED:
                summary["examples"].append({"pattern": pattern, "dead_ends": walk["dead_ends"]})
        total_examples += len(found)
        with_all += len(found) == examples
        subset["with_examples"] += bool(in_subset and found)
        if not found:
            no_example.append(pattern)
        per_pattern.append(
            {
                "pattern": pattern,
                "engine": engine,
                "examples": found,
                "checks": checks,
                "dead_ends": walk.get("dead_ends", 0),
                "in_paper_subset": in_subset,
            }
        )

        runs = [(engine, constraint)] + ([("backtracking", backtracking)] if engine == "automaton" else [])
        texts = [(text, engine) for text in found]
        if engine == "automaton":  # the other direction: examples the backtracking engine finds
            cross_rng = random.Random(f"{seed}:{pattern}:backtracking")
            cross, _ = find_examples(backtracking, chars, examples, cross_rng)
            texts += [(text, "backtracking") for text in cross if text not in found]
            counts["cross_examples"] += len(texts) - len(found)
        for text, generated_by in texts:
            data = text.encode("utf-8")
            try:
                reference = _regex.fullmatch(pattern, text, timeout=1.0) is not None
            except TimeoutError:
                reference = None
            timed = generated_by == engine
            sizes = chunker(data) if chunker is not None and timed else None
            if sizes is None and timed:
                sizes = [len(p) for p in (fallback or char_pieces(seed))(text)]
            verdicts = {}
            for name, checker in runs:
                seconds: list[float] = []
                feeds = [("bytes", [1] * len(data), None)] + ([("tokens", sizes, seconds)] if timed else [])
                for how, feed_sizes, clock in feeds:
                    state, died_at = _feed(checker, data, feed_sizes, clock)
                    if reference is not False and (died_at is not None or not checker.is_complete(state)):
                        counts["false_rejections"] += 1
                        if len(false_rejections) < LISTED:
                            false_rejections.append(
                                {
                                    "pattern": pattern,
                                    "engine": name,
                                    "text": text,
                                    "fed": how,
                                    "at": "end (incomplete)" if died_at is None else f"byte {died_at}",
                                }
                            )
                verdicts[name] = checker.accepts(data)
                if not timed:
                    continue
                if name == engine:
                    timing["all"].extend(seconds)
                    timing["automaton_on_automaton" if engine == "automaton" else "backtracking"].extend(seconds)
                else:
                    timing["automaton_on_backtracking"].extend(seconds)
            if engine == "automaton" and verdicts["automaton"] != verdicts["backtracking"]:
                counts["engine_disagreements"] += 1
                if len(disagreements) < LISTED:
                    disagreements.append(
                        {"pattern": pattern, "text": text, "generated_by": generated_by, **verdicts}
                    )
            for name, verdict in verdicts.items():
                if reference is not None and reference != verdict:
                    counts["reference_mismatches"] += 1
                    if len(reference_mismatches) < LISTED:
                        reference_mismatches.append(
                            {"pattern": pattern, "text": text, "engine": name, "accepts": verdict,
                             "regex.fullmatch": reference}
                        )

        if rejected:
            for prefix in list(dict.fromkeys(rejected))[:REJECTED_RECHECKS]:
                counts["rejected_prefixes_rechecked"] += 1
                if backtracking.accepts_prefix(prefix):
                    counts["prefix_disagreements"] += 1
                    if len(prefix_disagreements) < LISTED:
                        prefix_disagreements.append({"pattern": pattern, "prefix": prefix})
        counts["timeouts"] += constraint.timeouts + (backtracking.timeouts if backtracking is not constraint else 0)

    compiled = len(rows) - len(invalid)
    return {
        "settings": {
            "data": str(path),
            "limit": limit,
            "examples": examples,
            "seed": seed,
            "pieces": pieces,
            "check_budget": CHECK_BUDGET,
            "max_length": MAX_LENGTH,
        },
        "patterns": len(rows),
        "compiled": compiled,
        "invalid": len(invalid),
        "invalid_patterns": invalid[:LISTED],
        "engines": engines,
        "examples": {
            "found": total_examples,
            "patterns_with_examples": compiled - len(no_example),
            "patterns_with_all": with_all,
            "patterns_without": len(no_example),
            "prefix_checks": checks_total,
        },
        "no_example": no_example[:LISTED],
        "walks": walks,
        "paper_subset": subset,
        "false_rejections": counts["false_rejections"],
        "false_rejection_examples": false_rejections,
        "cross_examples": counts["cross_examples"],
        "engine_disagreements": counts["engine_disagreements"],
        "engine_disagreement_examples": disagreements,
        "reference_mismatches": counts["reference_mismatches"],
        "reference_mismatch_examples": reference_mismatches,
        "rejected_prefixes_rechecked": counts["rejected_prefixes_rechecked"],
        "prefix_disagreements": counts["prefix_disagreements"],
        "prefix_disagreement_examples": prefix_disagreements,
        "timeouts": counts["timeouts"],
        "advance": {name: _timing(values) for name, values in timing.items()},
        "per_pattern": per_pattern,
        "seconds": round(time.perf_counter() - started, 2),
    }
