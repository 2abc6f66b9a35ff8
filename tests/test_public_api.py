"""The public surface survives reorganisation: every public name imports from ``awrs``, every
console command's entry point imports, and the package keeps the layout that shows its design."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import awrs

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "awrs"

#: The public names as of 0.2.0: a name may be added to ``awrs.__all__``, never silently dropped.
PUBLIC = {
    "AWRS", "All", "DEAD", "METHODS", "AwrsError", "ConfigError", "Constraint", "ConstraintError", "Grammar",
    "JsonSchema", "LanguageModel", "Masking", "ModelError", "Predicate", "Regex", "Rejection", "Result",
    "SMCConfig", "Sample", "Scored", "Smiles", "Sql", "Stats", "TableModel", "TokenSampler", "Unconstrained",
    "Vocabulary", "generate", "generate_many", "load_model", "run_smc",
}

#: Modules allowed directly under ``awrs/``: the public API and the core types; everything else
#: lives in a package that names its part of the design.
MAX_TOP_LEVEL_MODULES = 8
MAX_MODULE_LINES = 450


def test_every_public_name_imports_from_awrs():
    assert PUBLIC <= set(awrs.__all__), f"dropped from awrs.__all__: {sorted(PUBLIC - set(awrs.__all__))}"
    namespace: dict = {}
    exec(f"from awrs import {', '.join(awrs.__all__)}", namespace)
    missing = [name for name in awrs.__all__ if namespace.get(name) is None]
    assert not missing, f"in awrs.__all__ but None or missing: {missing}"


def test_generate_and_run_smc_are_the_functions_not_their_modules():
    assert callable(awrs.generate) and callable(awrs.run_smc) and callable(awrs.load_model)


def test_every_console_entry_point_imports():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts, "pyproject.toml declares no console command"
    for command, target in scripts.items():
        module, _, attribute = target.partition(":")
        entry = getattr(importlib.import_module(module), attribute, None)
        assert callable(entry), f"the {command!r} command points at {target}, which does not import as a function"


@pytest.mark.parametrize("module", ["awrs.cli", "awrs.server", "awrs.evaluation"])
def test_python_dash_m_runs(module):
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_the_top_level_holds_only_the_public_api_and_core_types():
    modules = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, (
        f"awrs/ holds {len(modules)} loose modules ({', '.join(modules)}), expected at most "
        f"{MAX_TOP_LEVEL_MODULES}: move the new one into the package of its part (smc, cli, benchmarks, ...)"
    )
    for package in ("smc", "cli", "benchmarks"):
        assert (PACKAGE / package / "__init__.py").is_file(), f"awrs/{package}/ is expected to be a package"


def test_no_module_is_over_the_line_limit():
    long = {str(path.relative_to(ROOT)): n for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them along their seams): {long}"
