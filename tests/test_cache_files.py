"""The awrs cache shared by processes: one conversion on disk however many ask at once, and
nothing that a killed conversion leaves behind is ever trusted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from awrs.models.cache_files import exclusive, work_path

REQUANTIZE = (
    "import sys; from awrs.models.embedded import requantized_gguf; "
    "print(requantized_gguf(sys.argv[1]))"
)


def test_the_lock_serialises_makers_and_clears_dead_attempts(tmp_path):
    target = tmp_path / "model.gguf"
    dead_file = target.with_name(".model.gguf.999999.part")
    dead_folder = target.with_name(".model.gguf.999999.converting")
    other = tmp_path / ".other.gguf.999999.part"  # another target's temporary: not ours to remove
    dead_file.write_bytes(b"half")
    dead_folder.mkdir()
    (dead_folder / "weights").write_bytes(b"half")
    other.write_bytes(b"busy")

    order: list[str] = []
    inside = threading.Event()
    release = threading.Event()

    def first():
        with exclusive(target):
            order.append("first in")
            inside.set()
            release.wait(30)
            order.append("first out")

    def second():
        inside.wait(30)
        with exclusive(target):
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    inside.wait(30)
    assert not dead_file.exists() and not dead_folder.exists() and other.exists()
    release.set()
    for thread in threads:
        thread.join(30)
    assert order == ["first in", "first out", "second in"]
    assert work_path(target).name == f".model.gguf.{os.getpid()}.part"


def _requantize(cache: Path, kind: str) -> subprocess.Popen:
    env = {**os.environ, "AWRS_CACHE_DIR": str(cache)}
    return subprocess.Popen([sys.executable, "-c", REQUANTIZE, kind], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def llamacpp():
    pytest.importorskip("llama_cpp", reason="llama.cpp is not installed (make setup-llamacpp)")
    from awrs.errors import ModelError
    from awrs.models.embedded import embedded_gguf_path

    try:
        embedded_gguf_path()
    except ModelError as err:
        pytest.skip(str(err))


def test_two_processes_converting_at_once_both_succeed_with_one_conversion(llamacpp, tmp_path):
    makers = [_requantize(tmp_path, "q4_0") for _ in range(2)]
    results = [maker.communicate(timeout=300) for maker in makers]
    assert [maker.returncode for maker in makers] == [0, 0], results
    paths = {out.strip() for out, _ in results}
    assert len(paths) == 1
    said = [err.count("requantizing") for _, err in results]
    assert sorted(said) == [0, 1], results  # the second waited, then found the file
    models = tmp_path / "models"
    assert sorted(p.name for p in models.iterdir() if not p.name.endswith(".lock")) == [Path(paths.pop()).name]


def test_a_killed_conversion_leaves_nothing_trusted(llamacpp, tmp_path):
    models = tmp_path / "models"
    maker = _requantize(tmp_path, "q8_0")
    for _ in range(3000):  # until its temporary appears, then kill it mid-write
        parts = list(models.glob(".*.part")) if models.is_dir() else []
        if parts or maker.poll() is not None:
            break
        time.sleep(0.01)
    maker.send_signal(signal.SIGKILL)
    maker.communicate(timeout=60)
    if not parts:
        pytest.fail("the conversion finished before it could be killed; nothing was tested")
    assert not [p for p in models.iterdir() if p.suffix == ".gguf" and not p.name.startswith(".")]

    again = _requantize(tmp_path, "q8_0")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "requantizing" in err  # the half file was not taken for a finished one
    assert Path(out.strip()).is_file()
    assert not list(models.glob(".*.part"))  # the dead attempt's temporary is gone
