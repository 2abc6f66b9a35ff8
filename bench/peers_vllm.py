"""The vLLM column of ``bench/peers.py``: awrs on vLLM against awrs on llama.cpp, same model.

    .venv/bin/python bench/peers.py --peers vllm --threads 1 --seeds 2 --rounds 2

AWRS-SMC on the scaling benchmark's regex task (``awrs.benchmarks.scaling``) at 1, 10 and 64
particles, on the embedded SmolLM2-135M-Instruct: llama.cpp in this process (its default F16
weights), vLLM in ``.venv-vllm`` (``make setup-vllm``; its pins clash with ``.venv``) through
``awrs bench --scaling --backend vllm --json``, the same measurement with the same seeds, once
per weight type (``--vllm-dtype``). vLLM runs with awrs's CPU settings: in this process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``), a 1 GiB KV cache, 32-token blocks, prefix caching,
eager mode. Each round runs every side once, in turn (the order flips each round, so that a
slow stretch of a shared machine hits both); a cell is the median of the rounds' medians, and
the range over every seed of every round.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from awrs.benchmarks.scaling import format_scaling, measure_scaling
from awrs.models.base import LanguageModel

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


def measure_vllm(dtype: str, particles: Sequence[int], *, seeds: int, threads: int | None) -> list[dict]:
    """``measure_scaling``'s rows for the vllm backend, measured in ``.venv-vllm``."""
    if not VLLM_PYTHON.is_file():
        raise SystemExit("bench/peers.py: .venv-vllm is missing; run `make setup-vllm` (or drop --peers vllm)")
    command = [str(VLLM_PYTHON), "-m", "awrs.cli", "bench", "--scaling", "--backend", "vllm", "--dtype", dtype,
               "--scaling-particles", *map(str, particles), "--repeats", str(seeds), "--json"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    if threads:
        command += ["--threads", str(threads)]
        env["OMP_NUM_THREADS"] = str(threads)  # vLLM's CPU build reads it at import
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env, check=True)
    return json.loads(done.stdout)["vllm"]


def merge_rounds(rounds: list[list[dict]]) -> list[dict]:
    """One row per particle count: the median of the rounds' medians, the range over all."""
    merged = []
    for same_count in zip(*rounds):
        merged.append({"particles": same_count[0]["particles"],
                       "ms_per_particle_token": statistics.median(r["ms_per_particle_token"] for r in same_count),
                       "range": [min(r["range"][0] for r in same_count), max(r["range"][1] for r in same_count)],
                       "model_share": statistics.median(r["model_share"] for r in same_count)})
    return merged


def compare_with_vllm(
    llamacpp: LanguageModel, particles: Sequence[int], *, seeds: int, rounds: int, threads: int | None,
    dtypes: Sequence[str],
) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """Figures per side (``measure_scaling`` rows, rounds merged) and the sides' labels."""
    sides = ["llamacpp", *(f"vllm-{dtype}" for dtype in dtypes)]
    labels = {"llamacpp": f"llama.cpp ({llamacpp.weights or 'GGUF'})",
              **{f"vllm-{dtype}": f"vLLM ({dtype})" for dtype in dtypes}}
    measured: dict[str, list[list[dict]]] = {side: [] for side in sides}
    for round_ in range(rounds):
        for side in sides if round_ % 2 == 0 else reversed(sides):
            print(f"round {round_ + 1}/{rounds}: awrs on {labels[side]}", file=sys.stderr, flush=True)
            if side == "llamacpp":
                rows = measure_scaling(llamacpp, particles, seeds=seeds)
            else:
                rows = measure_vllm(side.removeprefix("vllm-"), particles, seeds=seeds, threads=threads)
            measured[side].append(rows)
    return {side: merge_rounds(rows) for side, rows in measured.items()}, labels


def format_vllm_table(figures: dict[str, list[dict]], labels: dict[str, str], *, seeds: int, rounds: int,
                      threads: int | None) -> str:
    """``format_scaling``'s table, headed by what was run."""
    heading = (f"awrs on vLLM against awrs on llama.cpp, embedded SmolLM2-135M-Instruct; {seeds} seeds x "
               f"{rounds} rounds per cell; threads: {threads or 'each backend default'}; vLLM in-process, "
               "1 GiB KV cache, 32-token blocks (awrs's CPU settings)")
    return heading + "\n\n" + format_scaling(figures, labels)
