"""Every method of an evaluation against one baseline, paired per instance, over seeds.

    python bench/method_table.py RUN_DIR_SEED0 RUN_DIR_SEED1 ... [--baseline lcd] [--domain spider]

Each RUN_DIR holds the eval-*.jsonl files of one seed (as bench/eval_limit.sh writes them).
A row is a method with its options and particle count, as `awrs report` labels it. Per domain
it prints each row's accuracy, valid rate and seconds per instance (means over the instances
that ran, all seeds together), and against the baseline: the paired accuracy and valid
differences with their standard errors (instance-level, seeds pooled: an instance under two
seeds counts twice) and the ratio of seconds per instance on the shared instances.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

from awrs.evaluation.runner import record_label


def row_label(record: dict) -> str:
    label = record_label(record)
    particles = record.get("particles")
    return label if particles in (None, 5) else f"{label} x{particles}"


def read_runs(dirs: list[Path]) -> dict[str, dict[str, dict[tuple[int, str], dict]]]:
    """{domain: {row: {(seed index, instance id): record}}} for the instances that ran."""
    found: dict[str, dict[str, dict[tuple[int, str], dict]]] = defaultdict(lambda: defaultdict(dict))
    for k, folder in enumerate(dirs):
        for path in sorted(Path(folder).glob("eval-*.jsonl")):
            for line in path.read_text().splitlines():
                record = json.loads(line) if line.strip() else {}
                if record.get("status") == "ok":
                    found[record["domain"]][row_label(record)][(k, record["id"])] = record
    return found


def mean_and_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def domain_table(rows: dict[str, dict], baseline: str) -> list[str]:
    lines = [f"| row | instances | accuracy | valid | s/instance | accuracy − {baseline} | valid − {baseline} "
             f"| time ÷ {baseline} |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    base = rows.get(baseline, {})
    for label in sorted(rows, key=lambda name: (name != baseline, name)):
        records = rows[label]
        mean = {key: sum(r["metrics"][key] for r in records.values()) / len(records)
                for key in ("accuracy", "valid")}
        seconds = sum(r["seconds"] for r in records.values()) / len(records)
        cells = [label, str(len(records)), f"{mean['accuracy']:.3f}", f"{mean['valid']:.3f}", f"{seconds:.1f}"]
        shared = sorted(set(records) & set(base))
        if label == baseline or not shared:
            cells += ["", "", ""]
        else:
            for key in ("accuracy", "valid"):
                diff, se = mean_and_se([records[i]["metrics"][key] - base[i]["metrics"][key] for i in shared])
                cells.append(f"{diff:+.3f} ± {se:.3f}")
            ratio = sum(records[i]["seconds"] for i in shared) / sum(base[i]["seconds"] for i in shared)
            cells.append(f"{ratio:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="folders of eval-*.jsonl files, one per seed")
    parser.add_argument("--baseline", default="lcd", help="the row the others are paired against (default: lcd)")
    parser.add_argument("--domain", action="append", help="only these domains (repeatable)")
    args = parser.parse_args()
    found = read_runs(args.runs)
    for domain in sorted(found):
        if args.domain and domain not in args.domain:
            continue
        print(f"\n### {domain}\n")
        print("\n".join(domain_table(found[domain], args.baseline)))


if __name__ == "__main__":
    main()
