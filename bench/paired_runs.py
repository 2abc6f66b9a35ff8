"""Paired comparison of two methods over several evaluation runs (one results file per seed).

Within a file both methods ran on the same instances, so the per-instance differences pair
them; across files (seeds) the mean difference and its standard error say whether a gap is
larger than the run-to-run noise.

    python bench/paired_runs.py awrs-smc lcd RUN_SEED0.jsonl RUN_SEED1.jsonl ... [--metric valid]

Prints, per domain, each run's rates for both methods and their difference, then the mean
difference over runs with its standard error (from the spread between runs) and a pooled
instance-level standard error (paired, all runs together).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from method_table import mean_and_se  # bench/ is on the path when this runs as a script


def read_run(path: Path, metric: str) -> dict[tuple[str, str], dict[str, float]]:
    """{(domain, method): {instance id: metric}} for the instances that ran."""
    found: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if record.get("status") != "ok":
            continue
        method = record["method"]
        if record.get("particles") not in (None, 5):
            method = f"{method}-{record['particles']}"
        found[(record["domain"], method)][record["id"]] = float(record["metrics"].get(metric, 0.0))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", help="method name as recorded, e.g. awrs-smc")
    parser.add_argument("second", help="method name as recorded, e.g. lcd")
    parser.add_argument("runs", nargs="+", type=Path, help="results files, one per seed")
    parser.add_argument("--metric", default="valid", help="metrics key: valid (default) or accuracy")
    args = parser.parse_args()

    per_domain: dict[str, list[tuple[str, int, float, float]]] = defaultdict(list)
    pooled: dict[str, list[float]] = defaultdict(list)
    for path in args.runs:
        run = read_run(path, args.metric)
        for domain in sorted({d for d, _ in run}):
            a, b = run.get((domain, args.first), {}), run.get((domain, args.second), {})
            both = sorted(set(a) & set(b))
            if not both:
                continue
            rate_a = sum(a[i] for i in both) / len(both)
            rate_b = sum(b[i] for i in both) / len(both)
            per_domain[domain].append((path.name, len(both), rate_a, rate_b))
            pooled[domain].extend(a[i] - b[i] for i in both)

    print(f"{args.metric}: {args.first} against {args.second}\n")
    print(f"| domain | run | instances | {args.first} | {args.second} | difference |")
    print("|---|---|---:|---:|---:|---:|")
    for domain, rows in per_domain.items():
        for name, n, rate_a, rate_b in rows:
            print(f"| {domain} | {name} | {n} | {rate_a:.3f} | {rate_b:.3f} | {rate_a - rate_b:+.3f} |")
    print(f"\n| domain | runs | mean {args.first} | mean {args.second} | mean difference | SE between runs | "
          "SE pooled instances |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for domain, rows in per_domain.items():
        differences = [rate_a - rate_b for _, _, rate_a, rate_b in rows]
        mean, se_runs = mean_and_se(differences)
        _, se_pooled = mean_and_se(pooled[domain])
        mean_a = sum(r[2] for r in rows) / len(rows)
        mean_b = sum(r[3] for r in rows) / len(rows)
        print(f"| {domain} | {len(rows)} | {mean_a:.3f} | {mean_b:.3f} | {mean:+.3f} | {se_runs:.3f} | "
              f"{se_pooled:.3f} |")


if __name__ == "__main__":
    main()
