"""``awrs coverage patterns``: Regex on a CSV of patterns, with generated positive examples."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import regex

from awrs import Regex
from awrs.cli import main
from awrs.coverage.patterns import candidates, find_examples, patterns_coverage
from awrs.coverage.patterns_report import format_patterns_coverage

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

PATTERNS = [
    (r"[a-z]{3}\d", "1"),  # regular: automaton
    (r"(a|b)\1c", "1"),  # backreference: backtracking, only two texts
    (r"(?=\d)[a-z0-9]{3}", "0"),  # lookahead: backtracking
    ("a(", "1"),  # invalid
    ("a{500}", "0"),  # no example within 64 characters
    ("(?!x)x", "0"),  # unsatisfiable
    (r"[é中]\d", "1"),  # non-ASCII characters of the pattern are candidates
    ("a{1,2}b", "0"),  # a comma: quoted in the CSV
]
EASY = [r"[a-z]{3}\d", r"(?=\d)[a-z0-9]{3}", r"[é中]\d"]


@pytest.fixture
def patterns_dir(tmp_path) -> Path:
    folder = tmp_path / "patterns"
    folder.mkdir()
    with open(folder / "patterns.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["regex", "in_paper_subset"])
        writer.writerows(PATTERNS)
    return tmp_path


def test_report_on_a_small_csv(patterns_dir):
    report = patterns_coverage(patterns_dir, examples=3, seed=0)
    assert report["patterns"] == 8
    assert report["compiled"] == 7 and report["invalid"] == 1
    assert report["invalid_patterns"][0]["pattern"] == "a("
    assert report["engines"] == {"automaton": 4, "backtracking": 3}
    assert report["paper_subset"] == {"patterns": 4, "compiled": 3, "with_examples": 3}
    by_pattern = {p["pattern"]: p for p in report["per_pattern"]}
    assert by_pattern[r"[a-z]{3}\d"]["engine"] == "automaton"
    assert by_pattern[r"(a|b)\1c"]["engine"] == "backtracking"
    assert by_pattern[r"(?=\d)[a-z0-9]{3}"]["engine"] == "backtracking"
    for pattern in EASY:
        found = by_pattern[pattern]["examples"]
        assert len(found) == 3 and len(set(found)) == 3, pattern
        assert all(regex.fullmatch(pattern, text) for text in found), (pattern, found)
    backref = by_pattern[r"(a|b)\1c"]["examples"]
    assert backref and set(backref) <= {"aac", "bbc"}
    assert set(by_pattern["a{1,2}b"]["examples"]) <= {"ab", "aab"}
    # no example, within the check budget (no hang)
    assert sorted(report["no_example"]) == sorted(["a{500}", "(?!x)x"])
    for pattern in ("a{500}", "(?!x)x"):
        assert by_pattern[pattern]["examples"] == []
        assert by_pattern[pattern]["checks"] <= report["settings"]["check_budget"]
    assert report["examples"]["patterns_without"] == 2
    assert report["examples"]["patterns_with_examples"] == 5
    assert report["false_rejections"] == 0 and report["false_rejection_examples"] == []
    assert report["engine_disagreements"] == 0 and report["cross_examples"] > 0
    assert report["reference_mismatches"] == 0
    assert report["prefix_disagreements"] == 0 and report["rejected_prefixes_rechecked"] > 0
    assert report["walks"]["automaton"]["dead_ends"] == 0  # an alive automaton prefix can be completed
    for name in ("all", "automaton_on_automaton", "automaton_on_backtracking", "backtracking"):
        timing = report["advance"][name]
        assert timing["advances"] > 0
        assert 0 <= timing["p50_us"] <= timing["p99_us"]
    assert report["advance"]["automaton_on_automaton"]["advances"] == (
        report["advance"]["automaton_on_backtracking"]["advances"]
    )
    text = format_patterns_coverage(report)
    assert "patterns read" in text and "a{500}" in text and "p99 us" in text
    json.dumps(report)  # JSON-ready


def test_seeded_and_independent_of_limit(patterns_dir):
    first = patterns_coverage(patterns_dir, examples=2, seed=5)
    again = patterns_coverage(patterns_dir, examples=2, seed=5)
    fewer = patterns_coverage(patterns_dir / "patterns", examples=2, seed=5, limit=3)
    assert fewer["patterns"] == 3
    examples = [p["examples"] for p in first["per_pattern"]]
    assert examples == [p["examples"] for p in again["per_pattern"]]
    assert examples[:3] == [p["examples"] for p in fewer["per_pattern"]]


def test_disagreements_between_the_engines_are_reported(tmp_path):
    # `regex` matches any character with [^\s\S]; an automaton built from re's parser, none
    pattern = r"[^\s\S]"
    (tmp_path / "patterns.csv").write_text(f"regex,in_paper_subset\n{pattern},0\n", encoding="utf-8")
    report = patterns_coverage(tmp_path, examples=2)
    automaton, backtracking = Regex(pattern), Regex(pattern, engine="backtracking")
    if automaton.accepts("%") == backtracking.accepts("%"):  # fixed: then nothing to report
        assert report["engine_disagreements"] == 0 and report["reference_mismatches"] == 0
        return
    assert report["engine_disagreements"] > 0 and report["prefix_disagreements"] > 0
    item = report["engine_disagreement_examples"][0]
    assert item["generated_by"] == "backtracking" and item["automaton"] != item["backtracking"]
    assert report["reference_mismatches"] > 0
    assert "engine disagreement: [^\\s\\S]" in format_patterns_coverage(report)


def test_walk_respects_the_budget():
    constraint = Regex("a{500}")
    found, checks = find_examples(constraint, candidates("a{500}"), 3, random.Random(0), budget=300)
    assert found == [] and checks == 300
    found, checks = find_examples(Regex("(?:x|y)"), candidates("x"), 5, random.Random(1), budget=500)
    assert sorted(found) == ["x", "y"] and checks <= 500


def test_candidates_include_the_patterns_characters():
    chars = candidates(r"[é中]\u00e8\N{GREEK SMALL LETTER ALPHA}")
    assert {"é", "中", "è", "α", "a", " ", "\n"} <= set(chars)
    assert len(chars) == len(set(chars))


def test_cli_json_and_errors(patterns_dir, capsys):
    code = main(["coverage", "patterns", "--data", str(patterns_dir), "--examples", "2", "--seed", "1", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["patterns"] == 8 and report["settings"]["examples"] == 2 and report["settings"]["seed"] == 1
    assert report["false_rejections"] == 0
    assert main(["coverage", "patterns", "--data", str(patterns_dir / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "awrs: error" in err
    # a folder without patterns.csv, and a CSV without a regex column
    (patterns_dir / "other").mkdir()
    assert main(["coverage", "patterns", "--data", str(patterns_dir / "other")]) == 2
    assert "patterns.csv" in capsys.readouterr().err
    (patterns_dir / "other" / "patterns.csv").write_text("pattern,x\nabc,1\n", encoding="utf-8")
    assert main(["coverage", "patterns", "--data", str(patterns_dir / "other")]) == 2
    assert "no 'regex' column" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["coverage", "patterns", "--data", str(patterns_dir), "--examples", "0"])
    assert info.value.code == 2


@pytest.mark.skipif(not (SHARED / "patterns" / "patterns.csv").is_file(), reason="shared data not present")
def test_shared_patterns(capsys):
    assert main(["coverage", "patterns", "--data", str(SHARED), "--limit", "20"]) == 0
    out = capsys.readouterr().out
    assert "patterns read" in out and "20" in out
    report = patterns_coverage(SHARED, limit=20)
    assert report["patterns"] == 20
    assert report["false_rejections"] == 0
    assert report["engine_disagreements"] == 0 and report["reference_mismatches"] == 0
    assert report["examples"]["patterns_with_examples"] >= 15
    assert report["advance"]["all"]["p50_us"] is not None
