"""A method against a baseline, split by how much the constraint binds on each instance.

    python bench/binding_split.py RUN_DIR_SEED0 RUN_DIR_SEED1 [--row awrs-smc] [--baseline lcd]
                                  [--domain spider] [--threshold -0.9] [--own]

Where the model alone almost always writes a valid text, the posterior given the constraint
and locally constrained decoding's distribution nearly coincide, so methods can only differ
where the constraint binds. How much it binds is AWRS-SMC's estimate of log P(valid)
(``log_marginal_likelihood``; an instance without an estimate, no valid sample found, binds).
So that the split does not depend on the run it scores, each seed's instances are split by
the *other* seed's estimate (two run folders), or with ``--own`` (one folder, e.g. tuning
with one seed) by the run's own. Prints, per part, the paired accuracy and valid differences
with their standard errors (seeds pooled: an instance under two seeds counts twice).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from method_table import mean_and_se, read_runs  # noqa: E402


def binds(record: dict | None, threshold: float) -> bool | None:
    if record is None:
        return None
    estimate = record.get("log_marginal_likelihood")
    return estimate is None or estimate < threshold


def split(rows: dict, row: str, baseline: str, seeds: int, threshold: float, own: bool) -> dict[str, list]:
    parts: dict[str, list] = {"binds": [], "the rest": []}
    method, base = rows.get(row, {}), rows.get(baseline, {})
    for (k, ident), record in method.items():
        if (k, ident) not in base:
            continue
        judge = record if own else method.get(((k + 1) % seeds, ident))
        verdict = binds(judge, threshold)
        if verdict is None:
            continue
        parts["binds" if verdict else "the rest"].append((record, base[(k, ident)]))
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="one folder per seed (eval-*.jsonl)")
    parser.add_argument("--row", default="awrs-smc")
    parser.add_argument("--baseline", default="lcd")
    parser.add_argument("--domain", default="spider")
    parser.add_argument("--threshold", type=float, default=-0.9,
                        help="binds when the estimate of log P(valid) is below this (default -0.9: P < 0.4)")
    parser.add_argument("--own", action="store_true", help="split by the run's own estimate (one seed)")
    args = parser.parse_args()
    if not args.own and len(args.runs) < 2:
        parser.error("give two seeds' folders (each split by the other's estimate), or --own")
    rows = read_runs(args.runs)[args.domain]
    parts = split(rows, args.row, args.baseline, len(args.runs), args.threshold, args.own)
    print(f"| {args.domain}: {args.row} − {args.baseline} | pairs | accuracy | valid |")
    print("|---|---:|---:|---:|")
    for name, pairs in parts.items():
        if not pairs:
            print(f"| {name} | 0 | | |")
            continue
        cells = []
        for key in ("accuracy", "valid"):
            mean, se = mean_and_se([a["metrics"][key] - b["metrics"][key] for a, b in pairs])
            cells.append(f"{mean:+.3f} ± {se:.3f}")
        print(f"| {name} | {len(pairs)} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
