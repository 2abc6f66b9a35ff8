"""Prompt prefix reuse on an evaluation, paired per instance: two copies of one llama.cpp model
evaluate the same instances alternately; one drops its kept prompt before each instance (every
prompt read from scratch, as `awrs eval` did before prefix reuse was exact), the other keeps it
(what `awrs eval` does now). Prints seconds per instance and the prompt-reading share of both,
and checks that their result lines are equal (timings aside).

    python bench/prefix_reuse.py spider ../shared/data --limit 8 [--model PATH|NAME] [--threads 2]

Alternating the two runs instance by instance gives both the same load on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import awrs
from awrs.evaluation.methods import with_stops
from awrs.evaluation.runner import plan_eval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("domain")
    parser.add_argument("data")
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--method", default="awrs-smc")
    parser.add_argument("--particles", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--model", default=None, help="a named model or a .gguf file (default: embedded)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="write the paired figures as JSON here")
    args = parser.parse_args()

    options = {"backend": "llamacpp"} | ({"n_threads": args.threads} if args.threads else {})
    models = {name: awrs.load_model(args.model, **options) for name in ("fresh", "reused")}
    with tempfile.TemporaryDirectory() as scratch:
        plan = plan_eval(args.domain, args.data, args.method, particles=args.particles,
                         max_tokens=args.max_tokens, limit=args.limit, start=args.start,
                         out_path=Path(scratch) / "unused.jsonl")
    rows = []
    for index, instance in plan.pending:
        records = {}
        for name, model in models.items():
            if name == "fresh":
                model.forget_prompts()
            records[name] = plan.evaluate(with_stops(model, plan.domain.stops), index, instance, model.name)
        untimed = [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in records.values()]
        row = {"id": instance.id, "equal": untimed[0] == untimed[1]}
        for name, record in records.items():
            row[name] = {k: record.get(k) for k in ("seconds", "model_seconds", "prompt_seconds",
                                                    "constraint_seconds", "sampler_seconds")}
        rows.append(row)
        print(json.dumps(row), flush=True)
    plan.domain.close()
    ok = [r for r in rows if r["fresh"]["seconds"] is not None and r["reused"]["seconds"] is not None]
    for name in ("fresh", "reused"):
        seconds = statistics.mean(r[name]["seconds"] for r in ok)
        prompt = statistics.mean(r[name]["prompt_seconds"] for r in ok)
        print(f"{name:6s}: {seconds:.2f} s/instance, prompt reading {prompt:.2f} s ({100 * prompt / seconds:.0f}%)")
    print(f"equal result lines: {sum(r['equal'] for r in rows)} of {len(rows)}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
