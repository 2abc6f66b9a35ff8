"""The text table of a regex coverage report (:func:`awrs.coverage.patterns.patterns_coverage`)."""

from __future__ import annotations

from collections.abc import Sequence

TIMING_LABELS = {
    "all": "all patterns, default engine",
    "automaton_on_automaton": "automaton patterns, automaton",
    "automaton_on_backtracking": "automaton patterns, backtracking",
    "backtracking": "backtracking patterns",
}


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_patterns_coverage(report: dict) -> str:
    """A text table of a :func:`patterns_coverage` report."""
    s = report["settings"]
    e = report["examples"]
    lines = [
        f"patterns coverage · Regex · {s['examples']} examples per pattern · seed {s['seed']} · {s['data']}",
        f"{'patterns read':36}{report['patterns']:>8}",
        f"{'compiled':36}{report['compiled']:>8}",
        f"{'invalid (ConfigError, skipped)':36}{report['invalid']:>8}",
        f"{'engine: automaton':36}{report['engines']['automaton']:>8}",
        f"{'engine: backtracking':36}{report['engines']['backtracking']:>8}",
        f"{'patterns with an example':36}{e['patterns_with_examples']:>8}",
        f"{'patterns with all ' + str(s['examples']) + ' examples':36}{e['patterns_with_all']:>8}",
        f"{'patterns with no example':36}{e['patterns_without']:>8}",
        f"{'positive examples found':36}{e['found']:>8}",
        f"{'prefix checks (walks)':36}{e['prefix_checks']:>8}",
    ]
    p = report["paper_subset"]
    if p["patterns"]:
        lines.append(
            f"paper subset: {p['patterns']} patterns, {p['compiled']} compiled, "
            f"{p['with_examples']} with an example"
        )
    lines += [
        "",
        f"false rejections (examples fed by bytes and by tokens, both engines): {report['false_rejections']}",
        (
            f"engine disagreements on examples (automaton vs backtracking): {report['engine_disagreements']}"
            f" (including {report['cross_examples']} extra examples the backtracking engine found"
            " for automaton patterns)"
        ),
        f"verdicts that differ from regex.fullmatch: {report['reference_mismatches']}",
        (
            f"automaton-rejected prefixes alive on the backtracking engine: {report['prefix_disagreements']}"
            f" of {report['rejected_prefixes_rechecked']} re-checked"
        ),
        f"backtracking checks abandoned at the time limit: {report['timeouts']}",
    ]
    for name, w in report["walks"].items():
        lines.append(
            f"walk dead ends on the {name} engine (alive, incomplete, no candidate extends it): "
            f"{w['dead_ends']} in {w['patterns_with_dead_ends']} patterns; walks cut at "
            f"{s['max_length']} characters: {w['length_cap']}"
        )
    lines += [
        "",
        f"advance, examples in {s['pieces']}",
        f"{'':36}{'advances':>10}{'p50 us':>10}{'p99 us':>10}",
    ]
    for name, label in TIMING_LABELS.items():
        t = report["advance"][name]
        lines.append(f"{label:36}{t['advances']:>10}{_fmt(t['p50_us']):>10}{_fmt(t['p99_us']):>10}")
    for title, key, show in (
        ("false rejection", "false_rejection_examples",
         lambda x: f"[{x['engine']}, {x['fed']}, {x['at']}] {x['pattern']}  text {x['text']!r}"),
        ("engine disagreement", "engine_disagreement_examples",
         lambda x: f"{x['pattern']}  text {x['text']!r} (found by {x['generated_by']}): "
                   f"automaton {x['automaton']}, backtracking {x['backtracking']}"),
        ("regex.fullmatch mismatch", "reference_mismatch_examples",
         lambda x: f"[{x['engine']}] {x['pattern']}  text {x['text']!r}: accepts {x['accepts']}"),
        ("prefix disagreement", "prefix_disagreement_examples",
         lambda x: f"{x['pattern']}  prefix {x['prefix']!r}"),
    ):
        for item in report[key][:10]:
            lines.append(f"{title}: {show(item)}")
    for name, w in report["walks"].items():
        for item in w["examples"][:10]:
            lines.append(f"walk dead ends ({name}): {item['dead_ends']} on {item['pattern']}")
    lines += _listing("no example found", report["no_example"], e["patterns_without"], 30)
    lines += _listing("invalid", [x["error"] for x in report["invalid_patterns"]], report["invalid"], 10)
    lines.append("")
    lines.append(f"time: {report['seconds']:.1f} s")
    return "\n".join(lines)


def _listing(title: str, items: Sequence[str], total: int, shown: int) -> list[str]:
    """A titled, indented list of at most ``shown`` items (with a count of the rest)."""
    if not items:
        return []
    out = ["", f"{title} ({total}):"] + [f"  {item}" for item in items[:shown]]
    if total > shown:
        out.append(f"  ... and {total - shown} more")
    return out
