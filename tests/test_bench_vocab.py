"""``awrs bench --vocabularies``: every row on a tiny model (the real run is `make bench-vocab`),
the llguidance mask engine's decoding, the table, and the CLI's checks."""

from __future__ import annotations

import pytest

from awrs.benchmarks.vocabularies import REGEX, SCHEMA, format_vocabularies, llguidance_lcd, measure_model
from awrs.cli import main
from awrs.server.testing import ToyChatModel

pytest.importorskip("llguidance")


def test_llguidance_decoding_counts_its_tokens_and_times():
    model = ToyChatModel()
    for grammar in ({"regex": REGEX}, {"json_schema": SCHEMA}):
        run = llguidance_lcd(model, model.encode("Q:"), grammar, particles=4, max_tokens=60, seed=1)
        assert 0 < run["particle_tokens"] <= 4 * 60 and 0 <= run["valid"] <= 4
        assert run["mask_seconds"] <= run["seconds"] and run["model_seconds"] <= run["seconds"]
    with pytest.raises(RuntimeError, match="cannot compile"):
        llguidance_lcd(model, model.encode("Q:"), {"regex": "a("}, particles=1, max_tokens=2, seed=0)


def test_every_row_of_both_tasks_and_the_table():
    report = measure_model(ToyChatModel(), particles=3, max_tokens=6, masking_tokens=2, seeds=2, progress=False)
    assert report["vocabulary"] == len(ToyChatModel().vocab) and set(report["tasks"]) == {"regex", "json"}
    regex = report["tasks"]["regex"]["rows"]
    assert list(regex) == ["unconstrained", "awrs-smc", "awrs-smc exact masks", "masking-smc", "llguidance mask"]
    assert "awrs-smc exact masks" not in report["tasks"]["json"]["rows"]
    assert regex["masking-smc"]["checks_per_token"] >= len(ToyChatModel().vocab) - 1
    assert regex["unconstrained"]["checks_per_token"] == 0
    for row in regex.values():
        low, high = row["range_ms"]
        assert 0 < low <= row["ms_per_particle_token"] <= high
    table = format_vocabularies([report, report])
    assert table.count("| llguidance mask |") == 2 and "masking-smc / awrs-smc" in table
    assert "–" in table  # no exact-mask row for JSON


def test_the_vocabulary_comparison_runs_on_one_backend(capsys):
    assert main(["bench", "--vocabularies", "--backend", "both"]) == 2
    assert "one backend" in capsys.readouterr().err
