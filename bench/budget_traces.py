"""Trajectories of independent AWRS particles, to fit the budget twist (awrs/smc/budget.py).

Runs AWRS-SMC without resampling (``ess_threshold=0``: every particle is an independent draw
from the locally constrained distribution, as under LCD, with its AWRS weight) on the first
instances of each evaluation domain, and writes one JSON line per particle: its token count at
every step, the constraint's ``min_completion_bytes`` there, its cumulative log weight, and
whether and when it finished with EOS. Only the tuning subset should be traced (the README's
subset: the first instances), never the one the results are reported on.

    python bench/budget_traces.py --data ../shared/data --out traces.jsonl \
        [--domains json,spider,patterns,molecules,goal_inference] [--limit 8] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from itertools import islice
from pathlib import Path

from awrs.evaluation.domains import get_domain
from awrs.evaluation.methods import with_stops
from awrs.generate import generate
from awrs.models import load_model

JSON_SPLITS = ["Github_trivial", "Github_easy", "Github_medium", "Glaiveai2K", "WashingtonPost"]
# the evaluation subset's token limits (bench/eval_subset.sh, docs/evaluation.md)
LIMITS = {"json": 350, "json-free": 350, "spider": 150, "patterns": 100, "molecules": 60, "goal_inference": 100}
COUNTS = {"json": 8, "json-free": 8, "spider": 60, "patterns": 60, "molecules": 20, "goal_inference": 20}


def folders(data: Path, domain: str) -> list[Path]:
    if domain in ("json", "json-free"):
        return [data / "jsonschemabench" / split for split in JSON_SPLITS]
    return [data]


def trace_instance(model, dom, instance, *, particles: int, max_tokens: int, seed: int) -> list[dict]:
    constraint = dom.constraint(instance)
    rows: dict[int, dict] = {i: {"t": [], "b": [], "logw": [], "rej": []} for i in range(particles)}

    def on_step(population) -> None:
        for i, row in rows.items():
            if "end" in row:
                continue
            tokens = population.tokens[i]
            if population.finished[i]:
                ok = population.log_weights[i] > -math.inf and not population.truncated[i]
                row["end"] = len(tokens) if ok else None
                row["final_logw"] = float(population.log_weights[i]) if ok else None
                continue
            row["t"].append(len(tokens))
            row["b"].append(int(constraint.min_completion_bytes(population.states[i])))
            row["logw"].append(round(float(population.log_weights[i]), 4))
            drawn = (population.last_step or {}).get("drawn") or {}
            row["rej"].append(len(drawn[i][1]) if i in drawn else -1)

    generate(model, instance.prompt, constraint, particles=particles, max_tokens=max_tokens,
             method="awrs-smc", ess_threshold=0.0, seed=seed, chat=instance.chat,
             system=instance.system, on_step=on_step)
    out = []
    for i, row in rows.items():
        row.setdefault("end", None)
        out.append({"id": instance.id, "domain": dom.name, "particle": i, "max_tokens": max_tokens, **row})
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--out", required=True)
    parser.add_argument("--domains", default="json,spider,patterns,molecules,goal_inference")
    parser.add_argument("--limit", type=int, default=None, help="instances per folder (default: the evaluation subset)")
    parser.add_argument("--particles", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="llamacpp")
    args = parser.parse_args(argv)
    model = load_model(backend=args.backend)
    data = Path(args.data)
    out = Path(args.out)
    done = set()
    if out.exists():
        done = {(r["domain"], r["id"]) for r in map(json.loads, out.read_text().splitlines())}
    with open(out, "a") as sink:
        for name in args.domains.split(","):
            dom = get_domain(name)
            model_d = with_stops(model, dom.stops)
            for folder in folders(data, name):
                path = folder / dom.folder if (folder / dom.folder).is_dir() else folder
                instances = list(islice(dom.instances(path, seed=args.seed), args.limit or COUNTS[name]))
                for index, instance in enumerate(instances):
                    if instance.skip or (dom.name, instance.id) in done:
                        continue
                    clock = time.perf_counter()
                    try:
                        rows = trace_instance(model_d, dom, instance, particles=args.particles,
                                              max_tokens=LIMITS[name], seed=args.seed + index)
                    except Exception as err:  # noqa: BLE001
                        print(f"{name} {instance.id}: {type(err).__name__}: {err}", file=sys.stderr)
                        continue
                    for row in rows:
                        sink.write(json.dumps(row) + "\n")
                    sink.flush()
                    finished = sum(r["end"] is not None for r in rows)
                    print(f"{name} {instance.id}: {finished}/{len(rows)} finished, "
                          f"{time.perf_counter() - clock:.1f} s", file=sys.stderr)
            dom.close()


if __name__ == "__main__":
    main()
