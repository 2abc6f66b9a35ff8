"""The installed llama.cpp build against another one (an AVX-512 build, say), alternated in fresh processes.

    # build the other one into a folder of its own, never into .venv:
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=ON ..." .venv/bin/python -m pip wheel --no-deps \\
        --no-binary llama-cpp-python -w /tmp/other llama-cpp-python==0.3.36
    .venv/bin/python -m pip install --no-deps --target /tmp/other-site /tmp/other/llama_cpp_python-*.whl
    .venv/bin/python bench/cpu_variant_ab.py --other /tmp/other-site [--seeds 3]

Each run is ``awrs generate`` on the regex task (10 particles, 30 tokens, llama.cpp, all
cores), on each named model, the two builds alternating seed by seed so that a slower stretch
of the machine hits both. The other build is put first on ``PYTHONPATH``; awrs probes it in a
child process before use, as it does any build. Prints the model's ms per particle-token
(forward passes only) and the run's, median and range, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

AWRS = Path(sys.executable).with_name("awrs")
REGEX = r" (yes|no), because [a-z ,]{3,40}\."
PROMPT = "Is the sea salty? Answer yes or no, then say why in a few words:"


def run(model: str, seed: int, site: str | None) -> dict:
    env = dict(os.environ)
    if site:
        env["PYTHONPATH"] = site + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    command = [str(AWRS), "generate", "--model", model, "--backend", "llamacpp", "--prompt", PROMPT,
               "--regex", REGEX, "--particles", "10", "--max-tokens", "30", "--seed", str(seed), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env, cwd="/")
    return json.loads(done.stdout)["stats"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--other", required=True, help="a folder holding another llama_cpp package")
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    print("| model | build | model ms per particle-token | run ms per particle-token |")
    print("|---|---|---|---|")
    for model in args.models:
        figures = {"installed": [], "other": []}
        for seed in range(args.seeds):
            for build, site in (("installed", None), ("other", args.other)):
                stats = run(model, seed, site)
                figures[build].append((1000 * stats["model_seconds"] / stats["tokens"],
                                       1000 * stats["total_seconds"] / stats["tokens"]))
                print(f"{model} {build} seed {seed}: {figures[build][-1][1]:.2f} ms", file=sys.stderr, flush=True)
        for build, runs in figures.items():
            model_ms = [m for m, _ in runs]
            total_ms = [t for _, t in runs]
            print(f"| {model} | {build} | {statistics.median(model_ms):.2f} ({min(model_ms):.2f}–{max(model_ms):.2f}) | "
                  f"{statistics.median(total_ms):.2f} ({min(total_ms):.2f}–{max(total_ms):.2f}) |")
        ratio = statistics.median(t for _, t in figures["installed"]) / statistics.median(t for _, t in figures["other"])
        print(f"| {model} | *installed / other* | | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
