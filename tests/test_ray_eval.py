"""``awrs eval --ray``: the same lines as a local run, whatever worker ran them and in whatever
order, and nothing lost or written twice when a worker dies mid-run. One local Ray cluster
(2 CPUs) serves the whole module: Ray takes seconds to start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason='Ray is not installed: pip install -e ".[ray]"')

from awrs import Regex, TableModel  # noqa: E402
from awrs.evaluation import Domain, Instance, read_records, run_eval  # noqa: E402
from awrs.evaluation.distributed import run_eval_ray  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module", autouse=True)
def cluster():
    # The workers unpickle this module's model and domain: send them by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def tiny_model() -> TableModel:
    def next_probs(context):
        return [0.3, 0.3, 0.3, 0.1] if len(context) < 8 else [0.1, 0.1, 0.1, 0.7]

    return TableModel(["a", "b", "c", "<eos>"], next_probs, eos=3, name="tiny")


class Words(Domain):
    """Instance k: a text matching its pattern; instances named in ``deadly`` end the process
    evaluating them (once, or every time when ``every_time``), as a worker killed mid-run."""

    name = "words"
    max_tokens = 12

    def __init__(self, count=12, deadly=(), marker=None, every_time=False):
        self.count, self.deadly, self.marker, self.every_time = count, deadly, marker, every_time

    def instances(self, data_dir, *, seed):
        for k in range(self.count):
            yield Instance(f"i{k}", prompt=[0], data={"pattern": "[abc]+" if k % 3 else "a[bc]*"})

    def constraint(self, instance):
        if instance.id in self.deadly and (self.every_time or not Path(self.marker).exists()):
            Path(self.marker).touch()
            os._exit(1)
        return Regex(instance.data["pattern"])

    def score(self, instance, text):
        ok = Regex(instance.data["pattern"]).accepts(text)
        return {"score": float(ok and "cc" in text), "valid": ok}


def untimed(path) -> dict:
    return {r["id"]: {k: v for k, v in r.items() if not k.endswith("seconds")} for r in read_records(path)}


def test_same_lines_as_a_local_run(tmp_path):
    options = dict(particles=6, seed=3, progress=False)
    run_eval(tiny_model(), Words(), tmp_path, "awrs-smc", out_path=tmp_path / "local.jsonl", **options)
    summary = run_eval_ray(tiny_model, Words(), tmp_path, "awrs-smc", workers=2, out_path=tmp_path / "ray.jsonl",
                           **options)
    assert summary["instances"] == 12 and not summary["interrupted"]
    assert untimed(tmp_path / "ray.jsonl") == untimed(tmp_path / "local.jsonl")
    # A rerun resumes: nothing left to do, nothing appended.
    before = (tmp_path / "ray.jsonl").read_bytes()
    run_eval_ray(tiny_model, Words(), tmp_path, "awrs-smc", workers=2, out_path=tmp_path / "ray.jsonl", **options)
    assert (tmp_path / "ray.jsonl").read_bytes() == before


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(tmp_path):
    marker = tmp_path / "died"
    options = dict(particles=6, seed=0, progress=False)
    run_eval(tiny_model(), Words(), tmp_path, "awrs-smc", out_path=tmp_path / "local.jsonl", **options)
    domain = Words(deadly=("i5",), marker=str(marker))
    run_eval_ray(tiny_model, domain, tmp_path, "awrs-smc", workers=2, out_path=tmp_path / "ray.jsonl", **options)
    assert marker.exists()  # a worker did die
    lines = (tmp_path / "ray.jsonl").read_text().splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    assert sorted(ids) == sorted(f"i{k}" for k in range(12))  # each once
    assert untimed(tmp_path / "ray.jsonl") == untimed(tmp_path / "local.jsonl")


def test_an_instance_that_keeps_killing_workers_is_recorded_with_the_reason(tmp_path):
    domain = Words(count=4, deadly=("i2",), marker=str(tmp_path / "died"), every_time=True)
    summary = run_eval_ray(tiny_model, domain, tmp_path, "awrs-smc", workers=2, particles=4,
                           out_path=tmp_path / "ray.jsonl", progress=False, attempts=2)
    records = {r["id"]: r for r in read_records(tmp_path / "ray.jsonl")}
    assert sorted(records) == ["i0", "i1", "i2", "i3"]
    assert records["i2"]["status"] == "skipped" and "worker died 2 times" in records["i2"]["reason"]
    assert summary["instances"] == 3 and summary["skipped"] == 1


@pytest.mark.model
def test_cli_on_the_embedded_model_equals_the_local_run(tmp_path):
    if not (SHARED / "patterns").is_dir():
        pytest.skip("no shared pattern data")
    address = ray.get_runtime_context().gcs_address
    common = ["eval", "patterns", "--data", str(SHARED), "--particles", "3", "--max-tokens", "16",
              "--limit", "3", "--json"]
    awrs = [sys.executable, "-c", "import sys; from awrs.cli import main; sys.exit(main())"]
    local = subprocess.run([*awrs, *common, "--threads", "1", "--out", str(tmp_path / "local.jsonl")],
                           capture_output=True, text=True, timeout=600)
    assert local.returncode == 0, local.stderr
    distributed = subprocess.run([*awrs, *common, "--ray", address, "--workers", "2", "--cpus-per-worker", "1",
                                  "--out", str(tmp_path / "ray.jsonl")], capture_output=True, text=True, timeout=600)
    assert distributed.returncode == 0, distributed.stderr
    assert json.loads(distributed.stdout)["instances"] == 3
    assert untimed(tmp_path / "ray.jsonl") == untimed(tmp_path / "local.jsonl")


def test_without_ray_the_flag_says_how_to_install_it(tmp_path, monkeypatch):
    from awrs.errors import ConfigError
    from awrs import cluster

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[ray\]"'):
        cluster.import_ray()
