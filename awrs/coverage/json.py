"""Coverage of :class:`~awrs.constraints.json_schema.schema.JsonSchema` on real schemas and instances.

Data layouts (see ``shared/data/README.md``):

* ``jsonschemabench/<split>/<file>.json``, one schema per file, and
  ``jsonschemabench/instances.jsonl`` with ``{"schema": "<split>/<file>", "valid": bool,
  "instance": ...}``;
* ``json-schema-test-suite/<draft>/*.json`` (the official suite; ``optional/`` reported apart).

Measured here:

* per split, the fraction of schemas that compile (and the most common reasons they do not);
* on the labelled instances of compiled schemas: agreement of ``accepts`` with the label, and
  with `jsonschema` itself; and *false prefix rejections*: valid instances some prefix of
  which is rejected, fed one byte at a time (the contract says there must be none);
* the same agreement on the official test suite (drafts 7 and 2020-12); ``format`` is an
  annotation in the required tests (as the specification says) and asserted in ``optional/``;
* the cost of one token-sized advance (p50/p99 microseconds) feeding valid instances in the
  embedded model's tokens when its tokenizer is cached, else in random 1-4 byte chunks.

Instances are written compactly (``json.dumps(v, separators=(",", ":"), ensure_ascii=False)``)
and checked with ``whitespace="compact"``.

Entry points: :func:`coverage` (everything, a JSON-ready dict) and :func:`format_report`.
"""

from __future__ import annotations

import json
import random
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from ..constraints.base import DEAD
from ..constraints.json_schema import JsonSchema
from ..errors import ConfigError

BENCH = "jsonschemabench"
SUITE = "json-schema-test-suite"
SUITE_DRAFTS = {"draft7": 7, "draft2020-12": 2020}


def compact(value: Any) -> bytes:
    """The compact JSON text of a value (ASCII escapes only where UTF-8 cannot carry it)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: escape them
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode("ascii")


def _reason(err: Exception) -> str:
    message = str(err)
    for marker in ("cannot resolve", "invalid JSON Schema", "invalid pattern", "draft 3"):
        if marker in message:
            return marker
    return type(err).__name__


def _compile(schema, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        try:
            return JsonSchema(schema, **kwargs), None, time.perf_counter() - started
        except ConfigError as err:
            return None, err, time.perf_counter() - started


def bench_schemas(data: Path) -> dict[str, list[tuple[str, Any]]]:
    """``{split: [(file name, schema)]}`` from a JSONSchemaBench folder."""
    root = Path(data) / BENCH if (Path(data) / BENCH).is_dir() else Path(data)
    out: dict[str, list[tuple[str, Any]]] = {}
    for split in sorted(p for p in root.iterdir() if p.is_dir()):
        out[split.name] = [(f.name, json.loads(f.read_text())) for f in sorted(split.glob("*.json"))]
    return out


def feed(constraint: JsonSchema, text: bytes, chunks: list[int] | None = None, hints: list | None = None):
    """Advance through ``text`` in chunks (default: one byte at a time).

    Returns (final state, bytes consumed before the first DEAD or None, per-advance seconds).
    With ``hints`` (a list), the offsets where ``next_bytes`` excluded the byte that came next
    are appended to it (there must be none on valid texts).
    """
    state = constraint.start()
    times = []
    at = 0
    sizes = chunks or [1] * len(text)
    clock = time.perf_counter
    for size in sizes:
        piece = text[at : at + size]
        if hints is not None:
            allowed = constraint.next_bytes(state)
            if allowed is not None and piece[0] not in allowed:
                hints.append(at)
        started = clock()
        state = constraint.advance(state, piece)
        times.append(clock() - started)
        at += size
        if state is DEAD:
            return DEAD, at, times
    return state, None, times


def _token_chunker(tokenizer_path: Path | None):
    """A function text -> chunk sizes in the embedded model's tokens, or None."""
    if tokenizer_path is None:
        try:
            from ..models.embedded import cache_dir

            found = sorted(cache_dir().glob("models/*/tokenizer.json"))
        except Exception:
            found = []
        if not found:
            return None, ""
        tokenizer_path = found[0]
    try:
        from tokenizers import Tokenizer

        from ..vocab import _gpt2_byte_decoder
    except ImportError:
        return None, ""
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    decoder = _gpt2_byte_decoder()
    lengths: dict[int, int] = {}

    def chunk(text: bytes) -> list[int] | None:
        ids = tokenizer.encode(text.decode("utf-8"), add_special_tokens=False).ids
        sizes = []
        for i in ids:
            if i not in lengths:
                piece = tokenizer.id_to_token(i)
                lengths[i] = len(bytes(decoder[c] for c in piece)) if all(c in decoder for c in piece) else -1
            sizes.append(lengths[i])
        if any(s <= 0 for s in sizes) or sum(sizes) != len(text):
            return None
        return sizes

    return chunk, f"tokens of {Path(tokenizer_path).parent.name}"


def _random_chunks(rng: random.Random, length: int) -> list[int]:
    sizes = []
    while length > 0:
        sizes.append(min(length, rng.randint(1, 4)))
        length -= sizes[-1]
    return sizes


def _timing(seconds: list[float]) -> dict:
    return {
        "advances": len(seconds),
        "p50_us": 1e6 * _percentile(seconds, 0.5),
        "p90_us": 1e6 * _percentile(seconds, 0.9),
        "p99_us": 1e6 * _percentile(seconds, 0.99),
        "mean_us": 1e6 * sum(seconds) / len(seconds) if seconds else None,
        "max_us": 1e6 * max(seconds) if seconds else None,
    }


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[k]


def bench_coverage(
    data: Path, *, limit: int | None = None, seed: int = 0, tokenizer: Path | None = None
) -> dict:
    """Compile rates, instance agreement, false prefix rejections and advance timings."""
    data = Path(data)
    root = data / BENCH if (data / BENCH).is_dir() else data
    schemas = bench_schemas(root)
    compiled: dict[str, JsonSchema | None] = {}
    splits: dict[str, dict] = {}
    compile_seconds = []
    for split, items in schemas.items():
        reasons: Counter = Counter()
        ok = 0
        for name, schema in items:
            constraint, err, seconds = _compile(schema)
            compile_seconds.append(seconds)
            compiled[f"{split}/{name}"] = constraint
            if constraint is None:
                reasons[_reason(err)] += 1
            else:
                ok += 1
        splits[split] = {
            "schemas": len(items),
            "compiled": ok,
            "rate": ok / len(items) if items else None,
            "failures": dict(reasons.most_common()),
        }
    total = sum(s["schemas"] for s in splits.values())
    total_ok = sum(s["compiled"] for s in splits.values())

    rng = random.Random(seed)
    chunker, chunking = _token_chunker(tokenizer)
    counts: Counter = Counter()
    false_prefix: list[dict] = []
    disagreements: list[dict] = []
    advance_seconds: dict[str, list[float]] = {}
    lines = (root / "instances.jsonl").read_text().splitlines()
    if limit is not None:
        lines = lines[:limit]
    for line in lines:
        record = json.loads(line)
        constraint = compiled.get(record["schema"])
        if constraint is None:
            counts["skipped (schema does not compile)"] += 1
            continue
        try:
            text = compact(record["instance"])
        except ValueError:
            counts["skipped (not JSON)"] += 1
            continue
        label = bool(record["valid"])
        hints: list[int] = []
        state, died_at, _ = feed(constraint, text, hints=hints)
        accepted = state is not DEAD and constraint.is_complete(state)
        reference = constraint.validate(record["instance"])
        if reference and hints:
            counts["next_bytes_violations"] += 1
        counts["instances"] += 1
        counts["valid"] += label
        counts["agree_label"] += accepted == label
        counts["agree_jsonschema"] += accepted == reference
        if accepted != label and len(disagreements) < 50:
            disagreements.append(
                {
                    "schema": record["schema"],
                    "label": label,
                    "accepted": accepted,
                    "jsonschema": reference,
                    "description": record.get("description", "")[:80],
                }
            )
        if label:
            if died_at is not None:
                counts["false_prefix_rejections"] += 1
                if len(false_prefix) < 50:
                    false_prefix.append(
                        {
                            "schema": record["schema"],
                            "at": died_at,
                            "text": text[:died_at].decode("utf-8", "replace")[-80:],
                        }
                    )
            for name, sizes in (
                ("tokens", chunker(text) if chunker else None),
                ("bytes", _random_chunks(rng, len(text))),
            ):
                if sizes is not None:
                    _, _, times = feed(constraint, text, sizes)
                    advance_seconds.setdefault(name, []).extend(times)
    instances = counts["instances"]
    return {
        "splits": splits,
        "schemas": total,
        "compiled": total_ok,
        "compile_rate": total_ok / total if total else None,
        "compile_ms_p50": 1e3 * _percentile(compile_seconds, 0.5),
        "compile_ms_p99": 1e3 * _percentile(compile_seconds, 0.99),
        "instances": instances,
        "valid_instances": counts["valid"],
        "skipped": {k: v for k, v in counts.items() if k.startswith("skipped")},
        "agreement_with_labels": counts["agree_label"] / instances if instances else None,
        "agreement_with_jsonschema": counts["agree_jsonschema"] / instances if instances else None,
        "false_prefix_rejections": counts["false_prefix_rejections"],
        "next_bytes_violations": counts["next_bytes_violations"],
        "false_prefix_examples": false_prefix,
        "disagreement_examples": disagreements,
        "advance": {
            ("random 1-4 byte chunks" if name == "bytes" else chunking): _timing(values)
            for name, values in advance_seconds.items()
        },
    }


def suite_coverage(data: Path) -> dict:
    """Agreement with the official JSON Schema Test Suite, per draft; optional/ apart."""
    data = Path(data)
    root = data / SUITE if (data / SUITE).is_dir() else data
    out: dict[str, dict] = {}
    for folder, draft in SUITE_DRAFTS.items():
        base = root / folder
        if not base.is_dir():
            continue
        for part, files in (
            ("required", sorted(base.glob("*.json"))),
            ("optional", sorted(base.glob("optional/**/*.json"))),
        ):
            counts: Counter = Counter()
            failures: list[dict] = []
            not_compiled: Counter = Counter()
            for path in files:
                for group in json.loads(path.read_text()):
                    constraint, err, _ = _compile(
                        group["schema"], default_draft=draft, check_formats=part == "optional"
                    )
                    counts["groups"] += 1
                    if constraint is None:
                        counts["groups_not_compiled"] += 1
                        counts["tests_not_compiled"] += len(group["tests"])
                        not_compiled[f"{path.relative_to(base)}: {_reason(err)}"] += 1
                        continue
                    for test in group["tests"]:
                        try:
                            text = compact(test["data"])
                        except ValueError:
                            counts["tests_not_json"] += 1
                            continue
                        hints: list[int] = []
                        state, died_at, _ = feed(constraint, text, hints=hints)
                        accepted = state is not DEAD and constraint.is_complete(state)
                        reference = constraint.validate(test["data"])
                        counts["tests"] += 1
                        if reference and hints:
                            counts["next_bytes_violations"] += 1
                        counts["agree"] += accepted == test["valid"]
                        counts["agree_jsonschema"] += accepted == reference
                        if reference and died_at is not None:
                            counts["false_prefix_rejections"] += 1
                        if accepted != test["valid"] and len(failures) < 40:
                            failures.append(
                                {
                                    "file": str(path.relative_to(base)),
                                    "group": group["description"],
                                    "test": test["description"],
                                    "expected": test["valid"],
                                }
                            )
            out[f"{folder}/{part}"] = {
                "files": len(files),
                "groups": counts["groups"],
                "groups_not_compiled": counts["groups_not_compiled"],
                "tests": counts["tests"],
                "tests_not_compiled": counts["tests_not_compiled"],
                "agreement": counts["agree"] / counts["tests"] if counts["tests"] else None,
                "agreement_with_jsonschema": counts["agree_jsonschema"] / counts["tests"]
                if counts["tests"]
                else None,
                "false_prefix_rejections": counts["false_prefix_rejections"],
                "next_bytes_violations": counts["next_bytes_violations"],
                "not_compiled": dict(not_compiled.most_common()),
                "failures": failures,
            }
    return out


def coverage(data: Path, *, limit: int | None = None, seed: int = 0, tokenizer: Path | None = None) -> dict:
    """Everything, as a JSON-ready dict: ``{"jsonschemabench": ..., "test_suite": ..., "seconds": ...}``.

    ``data`` is the shared data folder (holding ``jsonschemabench/`` and/or
    ``json-schema-test-suite/``); ``limit`` caps the number of instances read; ``tokenizer``
    is a ``tokenizer.json`` for the timing (default: the embedded model's, if converted).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FutureWarnings of `re` on schema patterns
        return _coverage(Path(data), limit=limit, seed=seed, tokenizer=tokenizer)


def _coverage(data: Path, *, limit: int | None, seed: int, tokenizer: Path | None) -> dict:
    data = Path(data)
    started = time.perf_counter()
    result: dict[str, Any] = {}
    if (data / BENCH).is_dir() or (data / "instances.jsonl").is_file():
        result["jsonschemabench"] = bench_coverage(data, limit=limit, seed=seed, tokenizer=tokenizer)
    if (data / SUITE).is_dir():
        result["test_suite"] = suite_coverage(data)
    if not result:
        raise ConfigError(f"no {BENCH}/ or {SUITE}/ folder under {data}")
    result["seconds"] = time.perf_counter() - started
    return result


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def format_report(result: dict) -> str:
    """The coverage dict as text tables."""
    lines: list[str] = []
    bench = result.get("jsonschemabench")
    if bench:
        lines.append("JSONSchemaBench: schemas that compile")
        lines.append(f"{'split':<16}{'schemas':>9}{'compiled':>10}{'rate':>10}  failures")
        for split, s in bench["splits"].items():
            fails = ", ".join(f"{k} {v}" for k, v in s["failures"].items())
            lines.append(f"{split:<16}{s['schemas']:>9}{s['compiled']:>10}{_pct(s['rate']):>10}  {fails}")
        lines.append(
            f"{'total':<16}{bench['schemas']:>9}{bench['compiled']:>10}{_pct(bench['compile_rate']):>10}"
        )
        lines.append(
            f"compile time: p50 {bench['compile_ms_p50']:.2f} ms, p99 {bench['compile_ms_p99']:.2f} ms"
        )
        lines.append("")
        lines.append(
            f"instances checked: {bench['instances']} ({bench['valid_instances']} valid); "
            f"skipped: {bench['skipped']}"
        )
        lines.append(f"agreement with labels:     {_pct(bench['agreement_with_labels'])}")
        lines.append(f"agreement with jsonschema: {_pct(bench['agreement_with_jsonschema'])}")
        lines.append(
            f"false prefix rejections (valid instances, byte by byte): {bench['false_prefix_rejections']}"
        )
        lines.append(
            "next_bytes hints that excluded the next byte of a valid instance: "
            f"{bench['next_bytes_violations']}"
        )
        for chunking, adv in bench["advance"].items():
            lines.append(
                f"advance, valid instances in {chunking} ({adv['advances']} advances): "
                f"p50 {adv['p50_us']:.1f} us, p90 {adv['p90_us']:.1f} us, "
                f"p99 {adv['p99_us']:.1f} us, mean {adv['mean_us']:.1f} us, max {adv['max_us']:.0f} us"
            )
        lines.append("")
    suite = result.get("test_suite")
    if suite:
        lines.append("JSON Schema Test Suite")
        lines.append(
            f"{'part':<24}{'groups':>8}{'not comp.':>11}{'tests':>8}{'agreement':>11}{'jsonschema':>12}"
            f"{'prefix rej.':>13}{'hint viol.':>12}"
        )
        for part, s in suite.items():
            lines.append(
                f"{part:<24}{s['groups']:>8}{s['groups_not_compiled']:>11}{s['tests']:>8}"
                f"{_pct(s['agreement']):>11}{_pct(s['agreement_with_jsonschema']):>12}"
                f"{s['false_prefix_rejections']:>13}{s['next_bytes_violations']:>12}"
            )
        lines.append("(agreement: with the suite's expectations; jsonschema: with the jsonschema package;")
        lines.append(" prefix rej.: texts jsonschema validates whose prefix was rejected; format is an")
        lines.append(" annotation in required/, asserted in optional/; groups that do not compile use a")
        lines.append(" remote $ref or a pattern Python's re cannot compile, e.g. \\p{Letter})")
        lines.append("")
    if "seconds" in result:
        lines.append(f"time: {result['seconds']:.1f} s")
    return "\n".join(lines)
