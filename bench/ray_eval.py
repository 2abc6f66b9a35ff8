"""Instances per minute of ``awrs eval``: the local runner against Ray with 1 and 2 workers.

    python bench/ray_eval.py [--domain patterns] [--instances 16] [--particles 5] [--max-tokens 32]

Every run evaluates the same instances (embedded model on llama.cpp, the machine's cores
split between the workers: 1 worker x all threads, 2 workers x half) into a fresh results
file. It prints, per runner: the seconds from the call to the last line (model loads and
Ray's start included), the seconds of the evaluation itself (first line to last line, plus
one instance's mean), instances per minute of that part, and Ray's cost per instance: the
evaluation time per instance of one worker with all cores against the local runner's. The lines
of every run are checked equal to the local run's but for timings.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from awrs.evaluation import read_records, run_eval  # noqa: E402
from awrs.evaluation.distributed import run_eval_ray  # noqa: E402
from awrs.models import load_model  # noqa: E402

TIMINGS = ("seconds", "generate_seconds")


def untimed(path: Path) -> dict:
    return {r["id"]: {k: v for k, v in r.items() if k not in TIMINGS} for r in read_records(path)}


def evaluation_seconds(path: Path, finished_at: list[float]) -> float:
    """First line to last line plus one mean instance: the run's time without start-up."""
    records = read_records(path)
    mean = sum(r.get("seconds", 0.0) for r in records) / max(len(records), 1)
    return finished_at[-1] - finished_at[0] + mean


class Clock:
    """Notes when each line was written (a results file has no timestamps of its own)."""

    def __init__(self, path: Path) -> None:
        self.path, self.times, self._seen = path, [], 0

    def poll(self) -> None:
        lines = len(read_records(self.path))
        now = time.perf_counter()
        self.times.extend([now] * (lines - self._seen))
        self._seen = lines


def timed(run, path: Path) -> tuple[float, float]:
    import threading

    clock, done = Clock(path), threading.Event()

    def watch():
        while not done.is_set():
            clock.poll()
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    started = time.perf_counter()
    watcher.start()
    run()
    done.set()
    watcher.join()
    clock.poll()
    return time.perf_counter() - started, evaluation_seconds(path, clock.times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="data root (../shared/data)")
    parser.add_argument("--domain", default="patterns")
    parser.add_argument("--instances", type=int, default=16)
    parser.add_argument("--particles", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--method", default="awrs-smc")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    common = dict(particles=args.particles, max_tokens=args.max_tokens, limit=args.instances, seed=0, progress=False)
    folder = Path(tempfile.mkdtemp(prefix="awrs-ray-bench-"))
    rows = []

    local_path = folder / "local.jsonl"
    model = load_model(backend="llamacpp", n_threads=cores, verbose=False)
    total, evaluation = timed(lambda: run_eval(model, args.domain, args.data, args.method, out_path=local_path,
                                               **common), local_path)
    rows.append(("local", 1, cores, total, evaluation))
    expected = untimed(local_path)

    import ray

    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    for workers in (1, 2):
        threads = max(cores // workers, 1)
        path = folder / f"ray-{workers}.jsonl"
        loader = functools.partial(load_model, backend="llamacpp", n_threads=threads, verbose=False)
        total, evaluation = timed(lambda: run_eval_ray(loader, args.domain, args.data, args.method, workers=workers,
                                                       cpus_per_worker=threads, out_path=path, **common), path)
        if untimed(path) != expected:
            print(f"ray with {workers} workers: lines differ from the local run's", file=sys.stderr)
            return 1
        rows.append(("ray", workers, threads, total, evaluation))
    ray.shutdown()

    n = args.instances
    local_per_instance = rows[0][4] / n
    print(f"{args.domain}, {n} instances, {args.method}, {args.particles} particles, {args.max_tokens} tokens, "
          f"{cores} cores; results in {folder}")
    print(f"{'runner':<8}{'workers':>8}{'threads':>8}{'total s':>10}{'eval s':>9}{'inst/min':>10}{'Ray s/inst':>12}")
    for runner, workers, threads, total, evaluation in rows:
        # Ray's own cost shows where the threads match the local run's: one worker with all cores
        overhead = f"{evaluation / n - local_per_instance:+.3f}" if runner == "ray" and workers == 1 else ""
        print(f"{runner:<8}{workers:>8}{threads:>8}{total:>10.1f}{evaluation:>9.1f}{60 * n / evaluation:>10.1f}"
              f"{overhead:>12}")
    print(json.dumps({"rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
