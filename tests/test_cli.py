"""The command line without a model: argument and input errors are one line, exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from awrs.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "awrs.cli", *args], capture_output=True, text=True, timeout=120)


def test_invalid_regex_is_a_one_line_error_with_exit_code_2():
    done = run_cli("generate", "--prompt", "hi", "--regex", "a(b")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "invalid regex" in lines[0] and "a(b" in lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "--prompt", "hi", "--regex", "a", "--particles", "0"],
        ["generate", "--prompt", "hi", "--regex", "a", "--method", "beam"],
        ["generate", "--regex", "a"],
        ["generate", "--prompt", "hi", "--regex", "a", "--time-limit", "0"],
        ["generate", "--prompt", "hi", "--regex", "a", "--masks", "sometimes"],
        ["eval", "patterns", "--data", ".", "--out", "x.jsonl", "--time-limit", "-1"],
    ],
)
def test_bad_arguments_exit_2(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_missing_model_path_is_a_clear_error(tmp_path, capsys):
    code = main(["generate", "--prompt", "hi", "--regex", "a", "--model", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert code == 2 and "no model at" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, code, word",
    [
        (["--regex", r"\d+", "--text", "123"], 0, "accepted"),
        (["--regex", r"\d+", "--text", "12a"], 1, "rejected"),
        (["--regex", r"\d{3}", "--text", "12", "--prefix"], 0, "accepted"),
        (["--regex", r"\d{3}", "--text", "12"], 1, "rejected"),
    ],
)
def test_check_command(args, code, word, capsys):
    assert main(["check", *args]) == code
    assert capsys.readouterr().out.startswith(word)


def test_check_needs_exactly_one_constraint(capsys):
    with pytest.raises(SystemExit) as info:
        main(["check", "--text", "a"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["check", "--regex", "a", "--smiles", "--text", "a"])


def test_unreadable_schema_file_is_a_one_line_error(tmp_path, capsys):
    pytest.importorskip("jsonschema")
    code = main(["check", "--json-schema", str(tmp_path / "none.json"), "--text", "{}"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot read the schema file" in err


def test_a_schema_can_be_given_inline(capsys):
    schema = '{"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}'
    assert main(["check", "--json-schema", schema, "--text", '{"age":3}']) == 0
    assert main(["check", "--json-schema", schema, "--text", '{"name":"x"}']) == 1
    assert main(["check", "--json-schema", ' {"type": ', "--text", "1"]) == 2
    assert "the schema given inline is not valid JSON" in capsys.readouterr().err


DATA = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.parametrize(
    "args, code",
    [
        (["--smiles", "--text", "c1ccccc1O"], 0),
        (["--smiles", "--text", "c1ccccc1("], 1),
        (["--smiles", "--text", "c1ccccc1(", "--prefix"], 0),
        (["--grammar", "tests/fixtures/grammar/goal_inference.lark", "--text", " (clear b1)", "--prefix"], 0),
        (["--grammar", "tests/fixtures/grammar/goal_inference.lark", "--text", " (fly b1)", "--prefix"], 1),
    ],
)
def test_check_other_constraint_kinds(args, code, capsys):
    pytest.importorskip("rdkit")
    pytest.importorskip("llguidance")
    assert main(["check", *args]) == code


def test_check_sql_against_a_database(capsys):
    db = DATA / "spider" / "database" / "concert_singer" / "concert_singer.sqlite"
    if not db.is_file():
        pytest.skip("shared Spider data not present")
    assert main(["check", "--sql-db", str(db), "--text", "SELECT name FROM singer"]) == 0
    assert main(["check", "--sql-db", str(db), "--text", "SELECT nme FROM singer"]) == 1
    assert main(["check", "--sql-db", str(db), "--text", "DELETE FROM singer"]) == 1


def test_invalid_grammar_and_schema_are_one_line_errors(tmp_path, capsys):
    pytest.importorskip("lark")
    bad = tmp_path / "bad.lark"
    bad.write_text("start: (\n")
    assert main(["check", "--grammar", str(bad), "--text", "x"]) == 2
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "strnig"}')
    assert main(["check", "--json-schema", str(schema), "--text", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("awrs: error:") for line in err)
