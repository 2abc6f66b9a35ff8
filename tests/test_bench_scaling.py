"""``awrs bench --scaling``: figures per particle count, their table and plot, and the CLI's checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from awrs.benchmarks.scaling import format_scaling, measure_scaling, plot_scaling
from awrs.constraints import Regex
from awrs.models.table import TableModel


def small_model() -> TableModel:
    tokens = ["a", "b", "ab", "c", "<eos>"]

    def next_probs(context):
        return np.random.default_rng(len(context)).dirichlet(np.ones(len(tokens)))

    return TableModel(tokens, next_probs, eos=len(tokens) - 1)


def test_one_row_per_particle_count_with_its_range_and_model_share(tmp_path: Path):
    model = small_model()
    rows = measure_scaling(model, (1, 4), seeds=2, max_tokens=5, prompt=[0], constraint=Regex("[ab]+"))
    assert [r["particles"] for r in rows] == [1, 4]
    for row in rows:
        low, high = row["range"]
        assert 0 < low <= row["ms_per_particle_token"] <= high
        assert 0.0 <= row["model_share"] <= 1.0
    table = format_scaling({"table": rows, "again": rows}).splitlines()
    assert table[2] == "| particles | table | again |"
    labelled = format_scaling({"table": rows, "again": rows}, {"table": "table (F16)"}).splitlines()
    assert labelled[2] == "| particles | table (F16) | again |"
    assert [line.split(" | ")[0] for line in table[4:]] == ["| 1", "| 4"]
    pytest.importorskip("matplotlib")
    plot_scaling({"table": rows}, tmp_path / "scaling.png", title="test", labels={"table": "table (F16)"})
    assert (tmp_path / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_scaling_is_a_clear_error(capsys):
    from awrs.cli import main

    assert main(["bench", "--plot", "x.png"]) == 2
    assert "--plot draws the --scaling figures" in capsys.readouterr().err
