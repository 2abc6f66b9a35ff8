"""bench/binding_split.py: each seed's instances are split by the *other* seed's estimate of
log P(valid) (or the run's own with --own), and the paired differences are per part."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
from binding_split import split  # noqa: E402
from method_table import read_runs  # noqa: E402


def _record(ident: str, method: str, accuracy: float, log_z: float | None = None) -> dict:
    return {"status": "ok", "domain": "spider", "id": ident, "method": method, "particles": 5,
            "metrics": {"accuracy": accuracy, "valid": 1.0}, "seconds": 1.0, "log_marginal_likelihood": log_z}


def _write(folder: Path, records: list[dict]) -> Path:
    folder.mkdir()
    (folder / "eval-spider.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_each_seed_is_split_by_the_other_seeds_estimate(tmp_path):
    # seed 0 says q1 binds and q2 does not; seed 1 says the opposite
    seed0 = _write(tmp_path / "s0", [_record("q1", "awrs-smc", 1.0, -3.0), _record("q1", "lcd", 0.0),
                                     _record("q2", "awrs-smc", 0.0, -0.1), _record("q2", "lcd", 0.0)])
    seed1 = _write(tmp_path / "s1", [_record("q1", "awrs-smc", 0.5, -0.1), _record("q1", "lcd", 0.0),
                                     _record("q2", "awrs-smc", 1.0, None), _record("q2", "lcd", 1.0)])
    rows = read_runs([seed0, seed1])["spider"]
    parts = split(rows, "awrs-smc", "lcd", seeds=2, threshold=-0.9, own=False)
    # seed 0's q2 binds by seed 1 (no estimate), seed 1's q1 binds by seed 0 (-3.0)
    assert sorted((a["id"], a["metrics"]["accuracy"]) for a, _ in parts["binds"]) == [("q1", 0.5), ("q2", 0.0)]
    assert sorted((a["id"], a["metrics"]["accuracy"]) for a, _ in parts["the rest"]) == [("q1", 1.0), ("q2", 1.0)]
    own = split(rows, "awrs-smc", "lcd", seeds=2, threshold=-0.9, own=True)
    assert sorted((a["id"], a["metrics"]["accuracy"]) for a, _ in own["binds"]) == [("q1", 1.0), ("q2", 1.0)]
    table = subprocess.run([sys.executable, str(BENCH / "binding_split.py"), str(seed0), str(seed1)],
                           capture_output=True, text=True, check=True).stdout
    assert "| binds | 2 | +0.250 ± 0.250 | +0.000 ± 0.000 |" in table
