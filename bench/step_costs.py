"""Where one AWRS-SMC step's time goes on llama.cpp, part by part, and what threads change.

    .venv/bin/python bench/step_costs.py [--particles 10] [--seeds 4] [--quant f16]

Runs the scaling benchmark's regex task (``awrs bench --scaling``'s prompt and pattern, 30 tokens) with
timers wrapped around each part of a step: ``llama_decode`` (the forward pass), copying the
logits of the evaluated rows out of llama.cpp, the log-softmax (numpy, float32), the token
masses and their block sums (``awrs.smc.step.token_masses``), the sampler (draws and weights, its
constraint checks taken out) and the constraint checks; "other" is the rest of the run (the
SMC loop, resampling, the batch layout). Prints ms per step and per particle-token, then the
forward pass alone for 1 and 10 distinct rows at 1 and 2 threads (the fastest of 10 steps).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

import awrs
from awrs.benchmarks.scaling import PATTERN, PROMPT
from awrs.models import llamacpp, llamacpp_session
from awrs.sampling import samplers
from awrs.smc import step as smc_step


class Timers:
    """Seconds spent in wrapped functions, by part (nested parts are not subtracted)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._undo: list = []

    def wrap(self, owner, attribute: str, part: str) -> None:
        original = getattr(owner, attribute)
        seconds = self.seconds

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                seconds[part] += time.perf_counter() - start

        setattr(owner, attribute, timed)
        self._undo.append((owner, attribute, original))

    def restore(self) -> None:
        for owner, attribute, original in reversed(self._undo):
            setattr(owner, attribute, original)
        self._undo.clear()


def step_parts(model, particles: int, seeds: int) -> tuple[dict[str, float], int, int, float]:
    timers = Timers()
    timers.wrap(llamacpp.LlamaCppModel, "_decode", "llama_decode")
    timers.wrap(llamacpp.LlamaCppModel, "_logits", "logits copy")
    timers.wrap(llamacpp_session, "log_softmax", "log-softmax")
    timers.wrap(smc_step, "token_masses", "token masses")
    timers.wrap(samplers.AWRS, "propose", "sampler")
    timers.wrap(samplers.AWRS, "force_eos", "sampler")
    steps = tokens = 0
    constraint = total = 0.0
    try:
        for seed in range(seeds):
            start = time.perf_counter()
            result = awrs.generate(model, PROMPT, awrs.Regex(PATTERN), particles=particles, max_tokens=30,
                                   chat=True, seed=seed)
            total += time.perf_counter() - start
            steps += result.stats.steps
            tokens += result.stats.tokens
            constraint += result.stats.constraint_seconds
    finally:
        timers.restore()
    parts = dict(timers.seconds)
    parts["sampler"] -= constraint  # the sampler's time includes the checks it asked for
    parts["constraint checks"] = constraint
    parts["other"] = total - sum(parts.values())
    return parts, steps, tokens, total


def forward_only(quant: str, threads: int, rows: int) -> float:
    model = awrs.load_model(backend="llamacpp", quant=quant, n_threads=threads)
    session = model.open(model.prompt_ids(PROMPT, chat=True), rows)
    session.logprobs()
    times = []
    for k in range(10):
        start = time.perf_counter()
        session.step(np.arange(rows), np.arange(rows, dtype=np.int64) + 300 + k)
        times.append(time.perf_counter() - start)
    session.close()
    return 1000 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--particles", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--quant", default=None, help="llama.cpp weights (default: load_model's, see its quant)")
    args = parser.parse_args()
    model = awrs.load_model(backend="llamacpp", quant=args.quant)
    awrs.generate(model, PROMPT, awrs.Regex(PATTERN), particles=2, max_tokens=4, chat=True, seed=0)  # warm up
    parts, steps, tokens, total = step_parts(model, args.particles, args.seeds)
    print(f"{model.name} ({model.weights}), {model.n_threads} threads; AWRS-SMC, regex task, {args.particles} particles, "
          f"{args.seeds} seeds: {steps} steps, {tokens} particle-tokens, "
          f"{1000 * total / tokens:.2f} ms per particle-token\n")
    print("| part | ms per step | ms per particle-token | share |")
    print("|---|---|---|---|")
    for part, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"| {part} | {1000 * seconds / steps:.2f} | {1000 * seconds / tokens:.3f} | "
              f"{100 * seconds / total:.1f} % |")
    print("\n| forward pass alone (fastest of 10) | 1 thread | 2 threads |")
    print("|---|---|---|")
    for rows in (1, 10):
        cells = [f"{forward_only(args.quant, threads, rows):.1f} ms" for threads in (1, 2)]
        print(f"| {rows} distinct rows | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
