"""bench/gpu_check.sh, the check to run on a GPU machine, runs here in its dry-run mode: it
builds its random model, enumerates the exact posterior, passes the exactness check on the CPU
and says that it skipped the CUDA checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_dry_on_the_cpu():
    done = subprocess.run([str(ROOT / "bench" / "gpu_check.sh"), "--dry-run"], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHON": sys.executable})
    lines = [line for line in done.stdout.splitlines() if line[:4] in ("PASS", "FAIL", "SKIP", "INFO")]
    assert done.returncode == 0, done.stdout + done.stderr
    assert any(line.startswith("SKIP CUDA checks: --dry-run") for line in lines)
    assert any(line.startswith("PASS exactness hf on cpu") for line in lines)
    assert not any(line.startswith("FAIL") for line in lines)
