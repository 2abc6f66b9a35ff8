"""Where vLLM is not installed (the main environment), the vllm backend says how to get it, and
awrs itself never imports vLLM. (tests/test_vllm_backend.py runs the backend in .venv-vllm.)"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

import awrs
from awrs.cli import main
from awrs.errors import ModelError


def test_importing_awrs_does_not_import_vllm():
    code = "import awrs, awrs.models, awrs.cli, sys; print('vllm' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed in this environment")
def test_without_vllm_the_backend_says_how_to_install_it(capsys):
    with pytest.raises(ModelError, match=r"not installed.*make setup-vllm.*\.venv-vllm/bin/awrs"):
        awrs.load_model(backend="vllm", verbose=False)
    assert main(["generate", "--backend", "vllm", "--prompt", "x", "--regex", "a", "--max-tokens", "2"]) == 2
    assert "make setup-vllm" in capsys.readouterr().err
    assert main(["doctor", "--no-backends"]) == 0
    assert "vLLM: " in capsys.readouterr().out
