"""A short soak of `awrs serve` on the embedded model (``bench/serve_soak.py``, half a minute).

The verdicts do not depend on how fast the machine is: the traffic has a time budget, but the
first round sends every kind of request (bad bodies and hang-ups included) whatever the budget,
every request is waited for, and what is checked -- nothing lost, every bad body refused,
nothing left open, every request counted by the server -- holds however many requests ran.
Memory growth cannot be judged in half a minute; only a generous bound is checked.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
pytest.importorskip("httpx")
pytest.importorskip("jsonschema")

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "serve_soak.py"


def _backend_available() -> bool:
    has = importlib.util.find_spec
    return has("llama_cpp") is not None or (has("torch") is not None and has("transformers") is not None)


def _load_script():
    import sys

    spec = importlib.util.spec_from_file_location("serve_soak", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["serve_soak"] = module  # its dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


@pytest.mark.model
def test_short_soak_loses_nothing_and_leaves_nothing_open(tmp_path, capsys):
    if not _backend_available():
        pytest.skip("neither llama-cpp-python nor torch with transformers is installed")
    soak = _load_script()
    out = tmp_path / "soak.json"
    # one CPU for the server: llama.cpp takes its thread count from it, and on a CPU shared with
    # other work two threads stall each other many times over (the verdicts hold either way)
    cpu = str(min(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else None
    argv = ["--minutes", "0.5", "--concurrency", "2", "--seed", "0", "--sample-every", "2", "--quiet",
            "--out", str(out)] + (["--server-cpus", cpu] if cpu else [])
    status = soak.main(argv)
    line = capsys.readouterr().out.strip()
    assert line.startswith("serve_soak: ") and "\n" not in line  # one summary line
    summary = json.loads(out.read_text())
    assert "setup_error" not in summary, summary.get("setup_error")
    failures = summary["failures"]
    assert summary["lost"] == 0 and summary["failed"] == 0 and summary["unanswered"] == 0, failures
    assert summary["sent"] == summary["answered"] + summary["cancelled"] + summary["rejected"]
    assert set(summary["kinds"]) == set(soak.WEIGHTS)  # the first round sent every kind
    assert summary["bad_sent"] > 0 and summary["bad_refused"] == summary["bad_sent"]
    for kind in ("hangup_stream", "hangup_timeout"):  # a hang-up, or an answer that came first
        assert set(summary["kinds"][kind]) <= {"cancelled", "answered", "answered_no_sample"}
    assert summary["left_open"] == {name: 0 for name in soak.GAUGES.values()}
    assert summary["server_counted"] == summary["sent"]
    outcomes = summary["server_outcomes"]
    uploads = summary["kinds"]["hangup_upload"]  # left while sending the body: the server's 400
    assert outcomes["error"] == 0 and outcomes["invalid"] == summary["bad_sent"] + uploads.get("cancelled", 0)
    # the server stops only runs whose client left
    assert summary["server_stopped_runs"] <= summary["cancelled"]
    assert summary["server_tracebacks"] == 0 and summary["server_exit"] == 0
    assert summary["rss_warmup_mb"] is not None and summary["rss_end_mb"] is not None
    assert summary["rss_end_mb"] < summary["rss_warmup_mb"] + 1024  # generous: half a minute says little
    assert not summary["growth_judged"] and summary["problems"] == []
    assert status == 0 and "serve_soak: PASS" in line and " lost=0 " in line
    assert len(summary["samples"]) >= 2 and summary["samples"][-1]["phase"] == "end"
