"""Milliseconds per particle-token of AWRS-SMC at resample power 1 and 0.3, alternated.

The regex task of ``awrs bench`` (" (yes|no), because [a-z ,]{3,40}\\."), 10 particles, 30
tokens, seeds 0-3, llama.cpp; both settings run in one process, one after the other per seed.

    python bench/resample_power_ab.py [--threads N] [--seeds 4]
"""

from __future__ import annotations

import argparse

import awrs
from awrs.constraints import Regex
from awrs.models import load_model

POWERS = (1.0, 0.3)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args(argv)
    model = load_model(backend="llamacpp", **({"n_threads": args.threads} if args.threads else {}))
    constraint = Regex(r" (yes|no), because [a-z ,]{3,40}\.")
    prompt = "Is the sky blue? Answer yes or no, and say why."
    ms = {power: [] for power in POWERS}
    for seed in range(args.seeds):
        for power in POWERS:
            result = awrs.generate(model, prompt, constraint, particles=10, max_tokens=30, seed=seed,
                                   chat=True, resample_power=power)
            ms[power].append(1000 * result.stats.total_seconds / result.stats.tokens)
    for power, values in ms.items():
        print(f"resample power {power}: " + " ".join(f"{v:.2f}" for v in values)
              + f"  mean {sum(values) / len(values):.2f} ms per particle-token")


if __name__ == "__main__":
    main()
