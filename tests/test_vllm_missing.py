"""Where vLLM is not installed (the main environment), the vllm backend says how to get it, and
awrs itself never imports vLLM. (tests/test_vllm_backend.py runs the backend in .venv-vllm.)"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

import awrs
from awrs.cli import main
from conftest import options_given_to_load_model
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


def test_vllm_options_reach_load_model_from_every_command(monkeypatch):
    """``--threads`` and ``--kv-cache-gb`` go to the vllm backend from generate, serve, bench
    and eval (llama.cpp's --n-ctx does not); ``--backend both`` adds vllm only where it imports."""
    from awrs.cli.options import side_by_side_backends
    from awrs.models.named import model_options

    assert model_options(None, "vllm", threads=2, n_ctx=512, kv_cache_gb=0.5) == {
        "threads": 2, "kv_cache_bytes": 1 << 29}
    assert model_options(None, "hf", threads=2, kv_cache_gb=0.5) == {}
    vllm_here = importlib.util.find_spec("vllm") is not None
    assert ("vllm" in side_by_side_backends()) == vllm_here

    tail = ["--backend", "vllm", "--threads", "1", "--n-ctx", "512", "--kv-cache-gb", "2"]
    seen = options_given_to_load_model(monkeypatch, [
        [*argv, *tail] for argv in (["serve"], ["generate", "--regex", "a", "--prompt", "hi"], ["bench"],
                                    ["eval", "patterns", "--data", ".", "--out", "x.jsonl"])])
    assert seen == [{"backend": "vllm", "device": "cpu", "threads": 1, "kv_cache_bytes": 2 << 30}] * 4
