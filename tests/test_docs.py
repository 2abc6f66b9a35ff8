"""Documentation that cannot rot: the site builds in strict mode, every ```python block of the
README and the docs runs, and every `awrs ...` line of their shell blocks parses with today's
command line. Blocks fenced ```py are shown but not run (each page says why)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# docs/_changelog holds fragments for CHANGELOG.md; docs/evaluation holds result files
PAGES = sorted(
    [ROOT / "README.md", ROOT / "CHANGELOG.md"]
    + [p for p in DOCS.glob("*.md")]
)
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)
SHELL_BREAKS = re.compile(r"\s(?:\||&&|;|>|2>|<)\s")


def blocks(page: Path, lang: str) -> list[str]:
    return [m["body"] for m in FENCE.finditer(page.read_text()) if m["lang"] == lang]


def awrs_command_lines(page: Path) -> list[str]:
    lines = []
    for body in blocks(page, "bash"):
        for line in body.replace("\\\n", " ").splitlines():
            line = line.strip()
            line = re.sub(r"^(?:[A-Z_]+=\S+\s+)+", "", line)  # leading VAR=value settings
            line = re.sub(r"^(?:\.venv/bin/|\S*/bin/)", "", line)
            if line.startswith("awrs "):
                lines.append(SHELL_BREAKS.split(line)[0])
    return lines


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_site_builds_in_strict_mode(tmp_path):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, env=env,
    )
    warnings = [line for line in done.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert done.returncode == 0 and not warnings, "\n".join(warnings) or done.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "index.html").exists()


@pytest.mark.model
@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "python")], ids=page_id)
def test_python_blocks_run(page, monkeypatch):
    import mktestdocs

    monkeypatch.chdir(ROOT)
    mktestdocs.check_md_file(page, lang="python", memory=True)


@pytest.mark.parametrize("page", [p for p in PAGES if awrs_command_lines(p)], ids=page_id)
def test_command_lines_parse(page):
    from awrs.cli import build_parser

    for line in awrs_command_lines(page):
        args = shlex.split(line, comments=True)[1:]
        try:
            build_parser().parse_args(args)
        except SystemExit as stop:  # --help and --version exit 0; a bad flag exits 2
            assert stop.code == 0, f"{page_id(page)}: `{line}` does not parse with today's awrs"


CHEAP_COMMANDS = ("awrs generate ", "awrs check ", "awrs --version")


@pytest.mark.model
def test_the_readme_command_lines_run():
    """The README's own command-line examples run as written (the cheap ones: a generation on
    the embedded model, a check)."""
    awrs_script = Path(sys.executable).parent / "awrs"
    lines = [line for line in awrs_command_lines(ROOT / "README.md") if line.startswith(CHEAP_COMMANDS)]
    assert any(line.startswith("awrs generate ") for line in lines)
    for line in lines:
        args = shlex.split(line, comments=True)[1:]
        done = subprocess.run([str(awrs_script), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"`{line}` failed:\n{done.stdout}\n{done.stderr}"


def test_no_issue_numbers_where_users_read():
    readable = [*PAGES, *(ROOT / "awrs").rglob("*.py")]
    found = [
        f"{page_id(path)}:{number}: {line.strip()}"
        for path in readable
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bissues? #?\d+", line, re.I)
    ]
    assert not found, "\n".join(found)


def test_every_page_is_in_the_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    missing = [p.name for p in DOCS.glob("*.md") if p.name not in nav]
    assert not missing, f"pages not in mkdocs.yml's nav: {missing}"
