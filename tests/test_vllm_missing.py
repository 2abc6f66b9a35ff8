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


def test_dtype_reaches_the_vllm_backend_from_every_command(monkeypatch):
    from awrs.models.named import model_options

    assert model_options(None, "vllm", dtype="bfloat16") == {"dtype": "bfloat16"}
    tail = ["--backend", "vllm", "--dtype", "bfloat16"]
    seen = options_given_to_load_model(monkeypatch, [
        [*argv, *tail] for argv in (["serve"], ["generate", "--regex", "a", "--prompt", "hi"], ["bench"],
                                    ["eval", "patterns", "--data", ".", "--out", "x.jsonl"])])
    assert seen == [{"backend": "vllm", "device": "cpu", "dtype": "bfloat16"}] * 4


def test_dtype_is_refused_with_a_reason_where_it_does_not_apply(monkeypatch, capsys):
    """An unknown type, and a backend that does not take one, are errors that say what to do,
    before any model loads."""
    from awrs.errors import ConfigError

    with pytest.raises(SystemExit):
        main(["generate", "--backend", "vllm", "--dtype", "float64", "--regex", "a", "--prompt", "hi"])
    assert "invalid choice: 'float64'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown vllm dtype 'float64'; choose one of float32, bfloat16, float16"):
        awrs.load_model(backend="vllm", dtype="float64", verbose=False)
    for backend in ("hf", "llamacpp"):
        with pytest.raises(ConfigError, match=f"dtype= is an option of backend='vllm', not '{backend}'"):
            awrs.load_model(backend=backend, dtype="bfloat16", verbose=False)

    def no_load(*args, **kwargs):
        raise AssertionError("no model loads when an option is wrong")

    monkeypatch.setattr("awrs.models.load_model", no_load)
    for backend in ("llamacpp", "hf", "auto"):
        assert main(["generate", "--backend", backend, "--dtype", "bfloat16", "--regex", "a", "--prompt", "hi"]) == 2
        assert f"--dtype sets the vllm backend's weights; --backend {backend} does not take it" in capsys.readouterr().err


def test_with_backend_both_dtype_goes_to_vllm_alone(monkeypatch):
    """``--backend both --dtype`` sets the vllm column's weights, and is an error where vllm does
    not run (it would set nothing)."""
    import argparse

    from awrs.cli.options import model_options_from_args
    from awrs.errors import ConfigError

    args = argparse.Namespace(backend="both", dtype="bfloat16", model=None, threads=None)
    monkeypatch.setattr("awrs.cli.options.side_by_side_backends", lambda: ("hf", "vllm"))
    assert model_options_from_args(args, "hf") == {}
    assert model_options_from_args(args, "vllm") == {"dtype": "bfloat16"}
    monkeypatch.setattr("awrs.cli.options.side_by_side_backends", lambda: ("llamacpp", "hf"))
    with pytest.raises(ConfigError, match="--backend both runs vllm only where it is installed"):
        model_options_from_args(args, "hf")
