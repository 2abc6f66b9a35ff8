"""``awrs eval`` killed with SIGKILL at random points, again and again: each resumed run keeps
every finished line once, never a torn one, and the final file equals an uninterrupted run's
(everything but timings)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

KILLS = 20

CHILD = textwrap.dedent("""
    import sys
    from awrs import Regex, TableModel
    from awrs.evaluation import Domain, Instance, run_eval

    class Words(Domain):
        name = "words"
        max_tokens = 40

        def instances(self, data_dir, *, seed):
            for k in range(200):
                yield Instance(f"i{k}", prompt=[0], data={"pattern": "[abc]+" if k % 3 else "a[bc]*"})

        def constraint(self, instance):
            return Regex(instance.data["pattern"])

        def score(self, instance, text):
            ok = Regex(instance.data["pattern"]).accepts(text)
            return {"score": float(ok and "cc" in text), "valid": ok}

    def next_probs(context):
        return [0.3, 0.3, 0.3, 0.1] if len(context) < 30 else [0.1, 0.1, 0.1, 0.7]

    model = TableModel(["a", "b", "c", "<eos>"], next_probs, eos=3, name="words")
    print("ready", flush=True)
    run_eval(model, Words(), sys.argv[2], "awrs-smc", particles=8, seed=0, out_path=sys.argv[1],
             progress=False)
""")


def _start(script, out, data):
    child = subprocess.Popen([sys.executable, str(script), str(out), str(data)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready", child.stderr.read()
    return child


def _lines(path):
    raw = path.read_bytes() if path.exists() else b""
    complete = raw[: raw.rfind(b"\n") + 1].decode().splitlines()
    return [json.loads(line) for line in complete]  # every complete line parses


def _untimed(record):
    return {k: v for k, v in record.items() if not k.endswith("seconds")}


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_sigkill_at_random_points_loses_duplicates_and_tears_nothing(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    reference = tmp_path / "reference.jsonl"
    child = _start(script, reference, tmp_path)
    child.communicate(timeout=300)
    assert child.returncode == 0
    expected = [_untimed(r) for r in _lines(reference)]
    assert len(expected) == 200

    killed = tmp_path / "killed.jsonl"
    rng = np.random.default_rng(0)
    done_counts = []
    for _ in range(KILLS):
        child = _start(script, killed, tmp_path)
        time.sleep(rng.uniform(0.0, 0.3))  # where the kill lands varies; every landing must be safe
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)
        records = _lines(killed)
        ids = [r["id"] for r in records]
        assert len(ids) == len(set(ids)), "a resumed run repeated a finished instance"
        assert [_untimed(r) for r in records] == expected[: len(records)], "a line was lost or changed"
        done_counts.append(len(records))
        if len(records) == len(expected):
            break
    child = _start(script, killed, tmp_path)
    child.communicate(timeout=300)
    assert child.returncode == 0
    assert [_untimed(r) for r in _lines(killed)] == expected
    assert killed.read_bytes().endswith(b"\n")
    assert len(set(done_counts)) > 1  # the kills landed at different points
