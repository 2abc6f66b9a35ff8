"""Instances per minute of ``awrs eval``: the local runner against Ray with 1 and 2 workers.

    python bench/ray_eval.py [--domain patterns] [--instances 16] [--particles 5] [--max-tokens 32]

Every run evaluates the same instances (embedded model on llama.cpp, the machine's cores
split between the workers: 1 worker x all threads, 2 workers x half) into a fresh results
file, and its lines are checked equal to the local run's but for timings. Seconds are those of
the call: the local runner's model is loaded before it, Ray's workers start (and load theirs)
inside it, so the last column is Ray's whole cost per instance over the local runner,
start-up included. Ray's own start (``ray.init``, a few seconds) is not counted.
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


def timed(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


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
    seconds = timed(lambda: run_eval(model, args.domain, args.data, args.method, out_path=local_path, **common))
    rows.append(("local", 1, cores, seconds))
    expected = untimed(local_path)

    import ray

    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    for workers in (1, 2):
        threads = max(cores // workers, 1)
        path = folder / f"ray-{workers}.jsonl"
        loader = functools.partial(load_model, backend="llamacpp", n_threads=threads, verbose=False)
        seconds = timed(lambda: run_eval_ray(loader, args.domain, args.data, args.method, workers=workers,
                                             cpus_per_worker=threads, out_path=path, **common))
        if untimed(path) != expected:
            print(f"ray with {workers} workers: lines differ from the local run's", file=sys.stderr)
            return 1
        rows.append(("ray", workers, threads, seconds))
    ray.shutdown()

    n = args.instances
    print(f"{args.domain}, {n} instances, {args.method}, {args.particles} particles, {args.max_tokens} tokens, "
          f"{cores} cores; results in {folder}")
    print(f"{'runner':<8}{'workers':>8}{'threads':>8}{'seconds':>10}{'inst/min':>10}{'s/inst vs local':>17}")
    for runner, workers, threads, seconds in rows:
        print(f"{runner:<8}{workers:>8}{threads:>8}{seconds:>10.1f}{60 * n / seconds:>10.1f}"
              f"{(seconds - rows[0][3]) / n:>+17.3f}")
    print(json.dumps({"rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
