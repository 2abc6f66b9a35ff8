"""How AWRS-SMC's cost per particle-token grows with the number of particles, per backend.

    .venv/bin/python bench/scaling.py                       # 1, 10, 32, 64 particles; both backends
    .venv/bin/python bench/scaling.py --plot docs/scaling.png

The regex task of issue 14 (``' (yes|no), because [a-z ,]{3,40}\\.'`` after a yes/no question,
chat template, 30 tokens), seeds 0-1, the embedded model. Prints ms per particle-token (wall
time of the run over the particle-tokens generated) and the model's share of it, as a
Markdown table; with ``--plot``, a PNG of the same.
"""

from __future__ import annotations

import argparse
import json
import statistics

import awrs

PATTERN = r" (yes|no), because [a-z ,]{3,40}\."
PROMPT = "Is the sea salty? Answer yes or no and say why."


def measure(model, particles: int, seeds: range, max_tokens: int) -> dict:
    per_token, model_share = [], []
    for seed in seeds:
        result = awrs.generate(model, PROMPT, awrs.Regex(PATTERN), particles=particles, max_tokens=max_tokens,
                               chat=True, seed=seed)
        stats = result.stats
        per_token.append(1000 * stats.total_seconds / max(stats.tokens, 1))
        model_share.append(stats.model_seconds / max(stats.total_seconds, 1e-9))
    return {"particles": particles, "ms_per_particle_token": statistics.median(per_token),
            "spread": [min(per_token), max(per_token)], "model_share": statistics.median(model_share)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--particles", type=int, nargs="+", default=[1, 10, 32, 64])
    parser.add_argument("--backends", nargs="+", default=["llamacpp", "hf"])
    parser.add_argument("--max-tokens", type=int, default=30)
    parser.add_argument("--plot", default=None, help="write a PNG of the figures here")
    args = parser.parse_args()
    rows = {}
    for backend in args.backends:
        model = awrs.load_model(backend=backend)
        awrs.generate(model, PROMPT, awrs.Regex(PATTERN), particles=2, max_tokens=4, chat=True, seed=0)  # warm up
        rows[backend] = [measure(model, n, range(2), args.max_tokens) for n in args.particles]
        del model
    print("| particles | " + " | ".join(f"{b} ms/particle-token (model share)" for b in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for k, n in enumerate(args.particles):
        cells = [f"{rows[b][k]['ms_per_particle_token']:.2f} ({rows[b][k]['spread'][0]:.2f}–"
                 f"{rows[b][k]['spread'][1]:.2f}; {100 * rows[b][k]['model_share']:.0f} %)" for b in rows]
        print(f"| {n} | " + " | ".join(cells) + " |")
    print(json.dumps(rows))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.6))
        for backend, points in rows.items():
            ax.plot([p["particles"] for p in points], [p["ms_per_particle_token"] for p in points], marker="o",
                    label=backend)
        ax.set_xscale("log")
        ax.set_xticks(args.particles, [str(n) for n in args.particles])
        ax.set_xlabel("particles")
        ax.set_ylabel("ms per particle-token")
        ax.set_title("AWRS-SMC, regex task, embedded SmolLM2-135M, 2-core CPU")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)


if __name__ == "__main__":
    main()
