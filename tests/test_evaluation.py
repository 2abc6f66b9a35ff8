"""The evaluation harness (awrs.evaluation): metrics, runner (resume, skipping), report."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from awrs import Regex, TableModel
from awrs.evaluation import (
    Domain,
    Instance,
    format_summary,
    get_domain,
    make_report,
    read_records,
    run_eval,
    run_method,
    score_outputs,
    summarize,
)

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def tiny_model(chat: bool = False) -> TableModel:
    """Tokens a, b, c, '}' and EOS; after two tokens EOS is likely."""

    def next_probs(context):
        generated = len(context) - 1
        if generated >= 2:
            return [0.05, 0.05, 0.05, 0.05, 0.8]
        return [0.4, 0.3, 0.2, 0.05, 0.05]

    model = TableModel(["a", "b", "c", "}", "<eos>"], next_probs, eos=4, name="tiny")
    if chat:
        model.apply_chat_template = lambda messages: [0]
    return model


class Letters(Domain):
    """A test domain: instance k asks for a text matching its pattern; score 1 when it starts with 'a'."""

    name = "letters"
    max_tokens = 4

    def __init__(self, patterns=("[ab]+", "[abc]+", "c+", "(", None)):
        self.patterns = patterns

    def instances(self, data_dir, *, seed):
        for k, p in enumerate(self.patterns):
            if p is None:
                yield Instance(f"i{k}", skip="malformed instance")
            else:
                yield Instance(f"i{k}", prompt=[0], data={"pattern": p})

    def constraint(self, instance):
        return Regex(instance.data["pattern"])

    def score(self, instance, text):
        ok = Regex(instance.data["pattern"]).accepts(text)
        return {"score": float(ok and text.startswith("a")), "valid": ok}


def run(tmp_path, method="awrs-smc", domain=None, **kwargs):
    kwargs.setdefault("particles", 4)
    kwargs.setdefault("seed", 0)
    return run_eval(tiny_model(), domain or Letters(), tmp_path, method, out_path=tmp_path / "r.jsonl",
                    progress=False, **kwargs)


def test_score_outputs_weights_and_best():
    dom = Letters()
    inst = Instance("x", prompt=[0], data={"pattern": "[ab]+"})
    outputs = [{"text": "ab", "weight": 0.3, "valid": True}, {"text": "b", "weight": 0.6, "valid": True},
               {"text": "ac", "weight": 0.1, "valid": False}]
    metrics = score_outputs(dom, inst, outputs)
    assert metrics["accuracy"] == pytest.approx(0.3)
    assert metrics["best_accuracy"] == 0.0  # the highest-weight output is "b"
    assert metrics["valid"] == pytest.approx(0.9)
    assert score_outputs(dom, inst, []) == {"accuracy": 0.0, "best_accuracy": 0.0, "valid": 0.0}


def test_run_records_every_instance_and_skips_bad_ones(tmp_path):
    summary = run(tmp_path)
    records = read_records(tmp_path / "r.jsonl")
    assert [r["id"] for r in records] == ["i0", "i1", "i2", "i3", "i4"]
    status = {r["id"]: r["status"] for r in records}
    assert status == {"i0": "ok", "i1": "ok", "i2": "ok", "i3": "skipped", "i4": "skipped"}
    assert records[3]["reason"].startswith("constraint:")  # "(" does not compile
    assert records[4]["reason"] == "malformed instance"
    ok = records[0]
    for key in ("outputs", "metrics", "seconds", "tokens", "constraint_checks", "model_calls", "particles", "seed"):
        assert key in ok
    assert ok["particles"] == 4 and ok["seed"] == 0 and records[1]["seed"] == 1
    assert sum(o["weight"] for o in ok["outputs"]) == pytest.approx(1.0)
    assert all(o["valid"] for o in ok["outputs"])
    assert records[2]["metrics"]["accuracy"] == 0.0  # "c+" never starts with "a"
    assert summary["instances"] == 3 and summary["skipped"] == 2
    assert summary["valid_rate"] == pytest.approx(1.0) and summary["no_output_rate"] == 0.0
    text = format_summary(summary)
    assert "3 instances, 2 skipped" in text


def test_resume_skips_done_instances_and_repairs_a_torn_line(tmp_path):
    run(tmp_path, limit=2)
    path = tmp_path / "r.jsonl"
    assert len(read_records(path)) == 2
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"id": "i2", "domain": "letters", "meth')  # killed mid-line
    summary = run(tmp_path)
    records = read_records(path)
    assert [r["id"] for r in records] == ["i0", "i1", "i2", "i3", "i4"]
    assert all(json.loads(line) for line in path.read_text().splitlines())
    assert summary["instances"] == 3 and summary["skipped"] == 2
    before = path.read_text()
    run(tmp_path)  # everything done: nothing appended
    assert path.read_text() == before


def test_a_record_says_where_its_generation_time_went(tmp_path):
    run(tmp_path, limit=1)
    (record,) = read_records(tmp_path / "r.jsonl")
    parts = [record[f"{part}_seconds"] for part in ("model", "constraint", "sampler")]
    assert all(x >= 0 for x in parts) and 0 <= record["prompt_seconds"] <= record["model_seconds"]
    assert sum(parts) == pytest.approx(record["generate_seconds"])
    summary = summarize(read_records(tmp_path / "r.jsonl"))
    assert summary["model_seconds_per_instance"] == record["model_seconds"]
    assert "model (prompt) / constraint / sampler" in format_summary(summary)


def test_same_seed_same_records(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    run(a, limit=3)
    run(b, limit=3)
    strip = lambda recs: [{k: v for k, v in r.items() if "seconds" not in k} for r in recs]
    assert strip(read_records(a / "r.jsonl")) == strip(read_records(b / "r.jsonl"))


def test_methods_and_sample_rerank_weights(tmp_path):
    model = tiny_model()
    inst = Instance("x", prompt=[0], data={"pattern": "[ab]+"})
    constraint = Regex("a+")
    outputs, _ = run_method(model, inst, constraint, "sample-rerank", particles=20, max_tokens=3, seed=0)
    assert outputs and all(o["valid"] and o["text"] and set(o["text"]) <= {"a"} for o in outputs)
    assert all(o["weight"] == pytest.approx(1 / len(outputs)) for o in outputs)
    assert len(outputs) < 20  # invalid unconstrained samples were dropped
    outputs, _ = run_method(model, inst, constraint, "unconstrained", particles=20, max_tokens=3, seed=0)
    assert len(outputs) == 20 and not all(o["valid"] for o in outputs)
    for method in ("lcd", "masking", "awrs-smc"):
        outputs, _ = run_method(model, inst, constraint, method, particles=5, max_tokens=3, seed=0)
        assert outputs and all(set(o["text"]) <= {"a"} for o in outputs)
        assert sum(o["weight"] for o in outputs) == pytest.approx(1.0)


def test_unknown_method_and_missing_data(tmp_path):
    from awrs import ConfigError

    with pytest.raises(ConfigError):
        run(tmp_path, method="nope")
    with pytest.raises(ConfigError):
        run_eval(tiny_model(), "patterns", tmp_path / "missing", "lcd", out_path=tmp_path / "x.jsonl",
                 progress=False)
    with pytest.raises(ConfigError):
        get_domain("chess")


def test_patterns_domain_on_fixture(tmp_path):
    summary = run_eval(tiny_model(chat=True), "patterns", FIXTURES / "patterns", "awrs-smc", particles=3,
                       max_tokens=3, seed=0, out_path=tmp_path / "p.jsonl", progress=False)
    records = read_records(tmp_path / "p.jsonl")
    assert [r["status"] for r in records] == ["ok", "skipped", "skipped"]
    assert records[0]["metrics"]["accuracy"] == pytest.approx(1.0)  # "[ab]c": a/b then c
    assert summary["instances"] == 1 and summary["skipped"] == 2
    dom = get_domain("patterns")
    inst = next(iter(dom.instances(FIXTURES / "patterns", seed=0)))
    assert inst.prompt[-1] == {"role": "user", "content": "[ab]c"} and inst.chat
    assert dom.score(inst, "bc")["score"] == 1.0 and dom.score(inst, "bcc")["score"] == 0.0


def test_json_domain_skips_unreadable_and_uncompilable_schemas(tmp_path):
    model = tiny_model(chat=True)
    summary = run_eval(model, "json", FIXTURES / "json", "lcd", particles=2, max_tokens=2, seed=0,
                       out_path=tmp_path / "j.jsonl", progress=False)
    records = {r["id"]: r for r in read_records(tmp_path / "j.jsonl")}
    assert records["split_a/broken.json"]["reason"].startswith("unreadable schema")
    assert records["split_a/bad_schema.json"]["reason"].startswith("constraint:")
    assert records["split_a/good.json"]["status"] == "ok"  # the tiny model cannot write JSON: no outputs
    assert summary["skipped"] == 2 and summary["instances"] == 1
    dom = get_domain("json")
    inst = Instance("g", data={"schema": {"type": "object", "required": ["a"],
                                          "properties": {"a": {"type": "integer"}}}})
    assert dom.score(inst, '{"a": 1}')["score"] == 1.0
    assert dom.score(inst, '{"a": "x"}')["score"] == 0.0
    assert dom.score(inst, '{"a": 1')["valid"] is False
    assert not dom.constraint(inst).accepts('{"a": 1}') and dom.constraint(inst).accepts('{"a":1}')
    spaced = get_domain("json-free")
    assert spaced.name == "json-free" and spaced.folder == dom.folder
    assert spaced.constraint(inst).accepts('{"a": 1}') and spaced.constraint(inst).accepts('{"a":1}')


def _spider_root(tmp_path) -> Path:
    root = tmp_path / "spider"
    (root / "database" / "shop").mkdir(parents=True)
    conn = sqlite3.connect(root / "database" / "shop" / "shop.sqlite")
    conn.execute("CREATE TABLE item (id INTEGER, name TEXT, price REAL)")
    conn.executemany("INSERT INTO item VALUES (?, ?, ?)", [(1, "pen", 2.0), (2, "ink", 5.0), (3, "cap", 2.0)])
    conn.commit()
    conn.close()
    table = {"db_id": "shop", "table_names_original": ["item"], "table_names": ["item"],
             "column_names_original": [[-1, "*"], [0, "id"], [0, "name"], [0, "price"]],
             "column_names": [[-1, "*"], [0, "id"], [0, "name"], [0, "price"]],
             "column_types": ["text", "number", "text", "number"]}
    (root / "tables.json").write_text(json.dumps([table]))
    dev = [{"db_id": "shop", "question": "Names by price?", "query": "SELECT name FROM item ORDER BY price, id"},
           {"db_id": "gone", "question": "?", "query": "SELECT 1"},
           {"question": "no db"},
           {"db_id": "shop", "question": "How many?", "query": "SELECT count(*) FROM item"}]
    (root / "dev.json").write_text(json.dumps(dev))
    return root


def test_spider_execution_accuracy(tmp_path):
    from awrs.evaluation.domains.spider import execute, same_results

    dom = get_domain("spider")
    root = _spider_root(tmp_path)
    instances = list(dom.instances(root, seed=0))
    assert [i.skip for i in instances] == [None, "missing database gone",
                                          "malformed item (needs db_id, question, query)", None]
    ordered, count = instances[0], instances[3]
    assert "Names by price?" in ordered.prompt[-1]["content"] and " * price (number): price" in ordered.prompt[-1]["content"]
    assert dom.score(ordered, "SELECT name FROM item ORDER BY price, id")["score"] == 1.0
    assert dom.score(ordered, "SELECT name FROM item ORDER BY price DESC")["score"] == 0.0  # order matters
    assert dom.score(count, "SELECT COUNT(id) FROM item")["score"] == 1.0
    assert dom.score(count, "SELECT nonsense FROM")["valid"] is False
    assert same_results("SELECT a FROM t", [(1,), (2,)], [(2,), (1,)])
    assert not same_results("SELECT a FROM t", [(1,), (1,)], [(1,)])  # multisets, not sets
    # columns in another order match; rows keep their pairing
    assert same_results("SELECT a, b FROM t", [(1, "x"), (2, "y")], [("y", 2), ("x", 1)])
    assert not same_results("SELECT a, b FROM t", [(1, "x"), (2, "y")], [("y", 1), ("x", 2)])
    assert same_results("SELECT a, b FROM t ORDER BY a", [(1, 1), (2, 3)], [(1, 1), (3, 2)])
    assert not same_results("SELECT a, b FROM t ORDER BY a", [(1, "x"), (2, "y")], [("y", 2), ("x", 1)])
    assert not same_results("SELECT a FROM t", [(1,)], [(1, 2)]) and same_results("SELECT a FROM t", [], [])
    db = root / "database" / "shop" / "shop.sqlite"
    with pytest.raises(sqlite3.OperationalError):  # the progress handler interrupts it
        execute(db, "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT count(*) FROM r",
                seconds=0.2)
    with pytest.raises(sqlite3.OperationalError):  # read-only
        execute(db, "DELETE FROM item")


def test_molecules_qed_and_diversity():
    pytest.importorskip("rdkit")
    from awrs.evaluation.domains.molecules import LeadingSpace, prompt

    dom = get_domain("molecules")
    inst = Instance("m")
    assert dom.score(inst, " CCO")["score"] == pytest.approx(0.4068, abs=1e-3)
    assert dom.score(inst, "C1CC") == {"score": 0.0, "valid": False}
    outputs = [{"text": "CCO", "valid": True}, {"text": "OCC", "valid": True}, {"text": "C(", "valid": False},
               {"text": "CCN", "valid": True}]
    assert dom.aggregate(inst, outputs)["diversity"] == pytest.approx(0.5)  # CCO == OCC
    constraint = dom.constraint(inst)
    assert isinstance(constraint, LeadingSpace)
    assert constraint.accepts(" CCO") and constraint.accepts("CCO") and not constraint.accepts("  CCO")
    assert prompt(["C", "CC"]).endswith("Molecule: C\nMolecule: CC\nMolecule:")


def test_molecule_prompts_are_seeded(tmp_path):
    pool = tmp_path / "GDB17_sample.txt"
    pool.write_text("\n".join(f"C{'C' * k}O" for k in range(30)))
    dom = get_domain("molecules")
    a = [i.prompt for i in dom.instances(tmp_path, seed=3)][:5]
    b = [i.prompt for i in dom.instances(tmp_path, seed=3)][:5]
    c = [i.prompt for i in dom.instances(tmp_path, seed=4)][:5]
    assert a == b and a != c and a[0].count("Molecule:") == 21


def test_goal_inference_equivalence(tmp_path):
    from awrs.evaluation.domains.goal_inference import states

    assert len(list(states(["b1"]))) == 2  # on the table, or held
    assert len(list(states(["b1", "b2"]))) == 5  # both on the table, one on the other (2), one held (2)
    data = tmp_path / "gi"
    data.mkdir()
    (data / "goal_inference.lark").write_text((Path(__file__).parent / "fixtures" / "grammar" /
                                               "goal_inference.lark").read_text())
    (data / "blocksworld.pddl").write_text(
        "(define (domain blocksworld) (:requirements :strips) (:predicates (clear ?x) (on-table ?x) "
        "(arm-empty) (holding ?x) (on ?x ?y)))")
    problem = ("(define (problem p) (:domain blocksworld) (:objects b1 b2 b3) (:init (on-table b1) (on-table b2) "
               "(on-table b3) (clear b1) (clear b2) (clear b3) (arm-empty)) (:goal (and (on b1 b2) (on b2 b3) "
               "(on-table b3) (clear b1) (arm-empty))) )")
    (data / "problems.jsonl").write_text(json.dumps({"id": "p", "description": "stack them", "problem": problem})
                                         + "\n" + json.dumps({"id": "bad", "problem": "x"}) + "\n")
    dom = get_domain("goal_inference")
    inst, bad = list(dom.instances(data, seed=0))
    assert bad.skip and inst.prompt.endswith("(:goal (and") and "stack them" in inst.prompt
    assert dom.score(inst, " (on b1 b2) (on b2 b3) (on-table b3) (clear b1) (arm-empty))))")["score"] == 1.0
    assert dom.score(inst, " (on b1 b2) (on b2 b3)))")["score"] == 1.0  # implies the rest: equivalent
    assert dom.score(inst, " (on b1 b2)))") == {"score": 0.0, "valid": True, "parses": 1.0}
    assert dom.score(inst, " (on b1 b9)))")["parses"] == 0.0  # b9 is not an object
    assert dom.score(inst, "(on b1 b2)))")["parses"] == 0.0  # not in the grammar (leading space)


def test_goal_inference_synthetic_problems_are_seeded():
    from awrs.evaluation.domains.goal_inference import synthetic_problems

    a, b = list(synthetic_problems(5, 4)), list(synthetic_problems(5, 4))
    assert a == b and a != list(synthetic_problems(6, 4))


def _fake_records(path: Path, method: str, accs, seconds, split=None):
    """``split``: (model, prompt, constraint, sampler) seconds of every line (None: an old file)."""
    timings = dict(zip(("model_seconds", "prompt_seconds", "constraint_seconds", "sampler_seconds"), split or ()))
    records = [{"id": f"i{k}", "domain": "letters", "method": method, "status": "ok",
                "metrics": {"accuracy": acc, "best_accuracy": float(acc >= 0.75), "valid": 1.0},
                "seconds": sec, "tokens": 10, "constraint_checks": 20, "model_calls": 5,
                "particles": 2, "model": "tiny", **timings} for k, (acc, sec) in enumerate(zip(accs, seconds))]
    with open(path, "a") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records)
        handle.write(json.dumps({"id": "s", "domain": "letters", "method": method, "status": "skipped",
                                 "reason": "missing database x"}) + "\n")


def test_report_tables_and_plot(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _fake_records(a, "awrs-smc", [1.0, 0.5], [2.0, 4.0], split=(1.5, 0.5, 0.75, 0.25))
    _fake_records(b, "lcd", [0.0, 0.25], [1.0, 1.0])
    plot = tmp_path / "report.png"
    pytest.importorskip("matplotlib")
    text = make_report([a, b], tmp_path / "report.md", plot=plot)
    assert (tmp_path / "report.md").read_text() == text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| method | particles | accuracy | best-sample acc. | valid rate | no output | s / instance"
                              " | model (prompt) / constraint / sampler s |")
    assert rows[1] == "| lcd | 2 | 0.125 | 0.000 | 1.000 | 1.000 | 1.00 | — | 2.00 | 0.500 | 2 | 1 |"  # no split kept
    assert rows[2] == "| awrs-smc | 2 | 0.750 | 0.500 | 1.000 | 1.000 | 3.00 | 1.50 (0.50) / 0.75 / 0.25 | 2.00 | 0.500 | 2 | 1 |"
    assert "2× missing database x" in text
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_summarize_empty():
    s = summarize([])
    assert s["instances"] == 0 and s["accuracy"] is None
    assert "—" in format_summary(s)


@pytest.fixture(scope="module")
def embedded():
    import awrs

    return awrs.load_model(verbose=False)


DATA = {"patterns": "patterns", "json": "jsonschemabench", "spider": "spider", "molecules": "molecules",
        "goal_inference": "goal_inference"}
NEEDS = {"molecules": "rdkit", "json": "jsonschema", "goal_inference": "lark", "spider": "lark", "patterns": "regex"}


@pytest.mark.model
@pytest.mark.parametrize("domain", list(DATA))
def test_smoke_embedded_model(embedded, domain, tmp_path):
    pytest.importorskip(NEEDS[domain])
    data = SHARED / DATA[domain]
    if not data.is_dir():
        pytest.skip(f"no shared data at {data}")
    summary = run_eval(embedded, domain, data, "awrs-smc", particles=2, max_tokens=6, limit=1, seed=0,
                       out_path=tmp_path / "r.jsonl", progress=False)
    assert summary["instances"] + summary["skipped"] == 1
    record = read_records(tmp_path / "r.jsonl")[0]
    assert record["domain"] == domain and record["method"] == "awrs-smc"
    if record["status"] == "ok":
        assert all(o["valid"] or not o["text"] for o in record["outputs"]) or record["outputs"] == []
        assert 0.0 <= record["metrics"]["accuracy"] <= 1.0


def test_stop_strings_end_texts_like_eos():
    from awrs.evaluation.methods import with_stops

    def next_probs(context):
        return [0.5, 0.3, 0.1, 0.1] if len(context) == 1 else [0.1, 0.1, 0.1, 0.7]

    model = TableModel(["a", "b\n", "\n", "<eos>"], next_probs, eos=3)
    wrapped = with_stops(model, ("\n",))
    assert wrapped is with_stops(model, ("\n",)) and with_stops(model, ()) is model
    assert wrapped.vocab.eos_ids == {1, 2, 3} and model.vocab.eos_ids == {3}
    inst = Instance("x", prompt=[0])
    outputs, _ = run_method(wrapped, inst, Regex("a?"), "awrs-smc", particles=8, max_tokens=2, seed=0)
    assert {o["text"] for o in outputs} <= {"", "a"} and all("\n" not in o["text"] for o in outputs)


class Interrupting(Letters):
    """Ctrl-C arrives while the second instance is being scored."""

    def score(self, instance, text):
        if instance.id == "i1":
            raise KeyboardInterrupt
        return super().score(instance, text)


def test_ctrl_c_leaves_a_valid_resumable_file(tmp_path):
    summary = run(tmp_path, domain=Interrupting())
    assert summary["interrupted"] and summary["instances"] == 1
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["i0"]
    summary = run(tmp_path)  # resume with a domain that no longer interrupts
    assert not summary["interrupted"] and summary["instances"] == 3 and summary["skipped"] == 2


def test_cli_eval_and_report(tmp_path, capsys):
    import argparse

    from awrs.evaluation.cli import add_eval_arguments, add_report_arguments, eval_command, report_command

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_eval_arguments(sub.add_parser("eval"))
    add_report_arguments(sub.add_parser("report"))
    out = tmp_path / "r.jsonl"
    args = parser.parse_args(["eval", "patterns", "--data", str(FIXTURES), "--method", "lcd", "--particles", "2",
                              "--max-tokens", "3", "--out", str(out), "--json"])
    assert eval_command(args, load=lambda _args: tiny_model(chat=True)) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["instances"] == 1 and summary["skipped"] == 2 and summary["method"] == "lcd"
    args = parser.parse_args(["report", str(out), "--out", str(tmp_path / "r.md")])
    assert report_command(args) == 0
    assert "| lcd | 2 | 1.000 |" in (tmp_path / "r.md").read_text()


def test_time_limit_stops_slow_instances_and_says_so(tmp_path):
    summary = run(tmp_path, method="masking", time_limit=1e-9)
    records = [r for r in read_records(tmp_path / "r.jsonl") if r["status"] == "ok"]
    assert len(records) == 3 and all("time limit" in (r["message"] or "") for r in records)
    assert summary["instances"] == 3


@pytest.mark.model
def test_an_instance_gives_the_same_line_alone_as_after_others(embedded, tmp_path):
    # llama.cpp re-uses the common prompt prefix of the instance before; when it read the rest in
    # other batches than a fresh prompt, the logits' last bits and so, here, the samples changed:
    # a resumed run differed from a whole one. Now the evaluation keeps the prefix between instances.
    data = SHARED / "patterns"
    if not data.is_dir():
        pytest.skip(f"no shared data at {data}")
    options = dict(particles=3, max_tokens=20, seed=0, progress=False)
    embedded.forget_prompts()  # "alone": as in a fresh process
    run_eval(embedded, "patterns", data, "awrs-smc", start=2, limit=1, out_path=tmp_path / "alone.jsonl", **options)
    run_eval(embedded, "patterns", data, "awrs-smc", limit=3, out_path=tmp_path / "whole.jsonl", **options)
    untimed = [{k: v for k, v in r.items() if not k.endswith("seconds")}
               for r in (read_records(tmp_path / "whole.jsonl")[2], read_records(tmp_path / "alone.jsonl")[0])]
    assert untimed[0]["id"] == untimed[1]["id"] == "pattern-2"
    assert untimed[0] == untimed[1]
