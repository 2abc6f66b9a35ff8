"""The package as users install it: an sdist and a wheel that twine accepts, and a wheel that
works in a fresh virtual environment holding only its declared dependencies."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

import awrs

ROOT = Path(__file__).resolve().parents[1]

TINY_GENERATION = """
import awrs
model = awrs.TableModel(["a", "b", "ab", "<eos>"], lambda context: [0.4, 0.3, 0.2, 0.1], eos=3)
result = awrs.generate(model, [], awrs.Regex("(ab)+"), particles=4, max_tokens=6, seed=0)
assert result.samples and all(sample.text in ("ab", "abab", "ababab") for sample in result.samples), result
print(sorted(result.posterior))
"""


def run(*command: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: build with this environment's setuptools instead of fetching one
    run(sys.executable, "-m", "build", "--sdist", "--wheel", "--no-isolation", "--outdir", out, ROOT)
    return out


def test_sdist_and_wheel_pass_twine_check(dist):
    files = sorted(path.name for path in dist.iterdir())
    assert files == [f"awrs-{awrs.__version__}-py3-none-any.whl", f"awrs-{awrs.__version__}.tar.gz"]
    assert "PASSED" in run(sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir()))


def test_wheel_holds_the_package_and_its_static_files(dist):
    names = zipfile.ZipFile(next(dist.glob("*.whl"))).namelist()
    assert "awrs/__init__.py" in names and "awrs/cli/commands.py" in names
    assert any(name.startswith("awrs/server/static/") for name in names)
    assert not any(name.startswith(("tests/", "bench/", "docs/")) for name in names)


def test_wheel_installs_and_runs_in_a_fresh_environment(dist, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / "bin"
    run(bin_dir / "python", "-m", "pip", "install", "--quiet", next(dist.glob("*.whl")))
    assert run(bin_dir / "awrs", "--version").strip() == f"awrs {awrs.__version__}"
    doctor = run(bin_dir / "awrs", "doctor", "--no-backends")
    assert "awrs" in doctor
    # only the declared dependencies came along: no torch, no transformers
    installed = run(bin_dir / "python", "-m", "pip", "list", "--format=freeze").lower()
    assert "torch" not in installed and "transformers" not in installed
    printed = run(bin_dir / "python", "-c", TINY_GENERATION, cwd=tmp_path)
    assert "'ab'" in printed
