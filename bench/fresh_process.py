"""AWRS-SMC against unconstrained sampling, each run in a fresh ``awrs generate`` process.

    .venv/bin/python bench/fresh_process.py [--models smollm2-135m gemma3-270m] [--seeds 3] [--threads N]

What a one-shot user feels: every run is a new process, so every one-time cost of a run
(building per-vocabulary structures, the first allocations) is in its figures; per-vocabulary
structures kept on disk (the byte trie) are read back, as on a user's second run. For each
model and task -- the yes/no regex and a small JSON Schema, 10 particles, 30 tokens, llama.cpp
-- the methods alternate seed by seed. Prints a Markdown table: particle-tokens per second and
where the time went (model, constraint, sampler; medians over seeds, ranges in brackets), and
AWRS-SMC's throughput over unconstrained sampling's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

AWRS = Path(sys.executable).with_name("awrs")
REGEX = r" (yes|no), because [a-z ,]{3,40}\."
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"enum": ["yes", "no"]}, "reason": {"type": "string", "maxLength": 40}},
    "required": ["answer", "reason"],
    "additionalProperties": False,
}
PROMPTS = {"regex": "Is the sea salty? Answer yes or no, then say why in a few words:",
           "json": 'Is the sea salty? Reply in JSON with "answer" and "reason":'}


def run(model: str, task: str, method: str, seed: int, schema: Path, threads: int | None) -> dict:
    command = [str(AWRS), "generate", "--model", model, "--method", method, "--prompt", PROMPTS[task],
               "--particles", "10", "--max-tokens", "30", "--seed", str(seed), "--backend", "llamacpp", "--json"]
    command += ["--regex", REGEX] if task == "regex" else ["--json-schema", str(schema)]
    if threads:
        command += ["--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)["stats"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        schema = Path(folder) / "schema.json"
        schema.write_text(json.dumps(SCHEMA))
        rows = []
        for model in args.models:
            for task in ("regex", "json"):
                figures: dict[str, list[dict]] = {"unconstrained": [], "awrs-smc": []}
                for seed in range(args.seeds):
                    for method in figures:
                        figures[method].append(run(model, task, method, seed, schema, args.threads))
                        print(f"{model} {task} {method} seed {seed}: "
                              f"{figures[method][-1]['particle_tokens_per_second']:.1f} particle-tokens/s",
                              file=sys.stderr, flush=True)
                rows.append((model, task, figures))
    print("| model | task | method | particle-tokens/s | model | constraint | sampler |")
    print("|---|---|---|---|---|---|---|")
    for model, task, figures in rows:
        for method, runs in figures.items():
            speed = [r["particle_tokens_per_second"] for r in runs]
            shares = {part: [r[f"{part}_seconds"] / r["total_seconds"] for r in runs]
                      for part in ("model", "constraint", "sampler")}
            cells = [f"{100 * statistics.median(v):.1f} % ({100 * min(v):.1f}–{100 * max(v):.1f})"
                     for v in shares.values()]
            print(f"| {model} | {task} | {method} | {statistics.median(speed):.1f} ({min(speed):.1f}–{max(speed):.1f}) | "
                  + " | ".join(cells) + " |")
        ratios = [a["particle_tokens_per_second"] / b["particle_tokens_per_second"]
                  for a, b in zip(figures["awrs-smc"], figures["unconstrained"])]
        print(f"| {model} | {task} | *awrs-smc / unconstrained* | {statistics.median(ratios):.2f}x "
              f"({min(ratios):.2f}–{max(ratios):.2f}) | | | |")


if __name__ == "__main__":
    main()
