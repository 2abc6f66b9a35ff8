"""``awrs bench --scaling``: AWRS-SMC's cost per particle-token as the particles grow, per backend.

The task is the regex task (a yes/no answer and a short reason after a chat prompt, or after
the plain prompt for a base model without a chat template):
the same prompt, pattern, token limit and seeds at every particle count, so the figures differ
only by the batch. ms per particle-token is the run's time (model, constraint and sampler)
over the particle-tokens it generated; the model's share is the forward passes' part of it.
Rows with one token history are evaluated once, so a step costs what its distinct histories
cost, and the figures depend on how often particles agree as well as on the batch kernels.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from ..constraints import Regex
from ..constraints.base import Constraint
from ..generate import generate
from ..models.base import LanguageModel

PATTERN = r" (yes|no), because [a-z ,]{3,40}\."
PROMPT = "Is the sea salty? Answer yes or no and say why."
PARTICLES = (1, 10, 32, 64)


def measure_scaling(
    model: LanguageModel,
    particles: Sequence[int] = PARTICLES,
    *,
    seeds: int = 2,
    max_tokens: int = 30,
    prompt: str | Sequence[int] = PROMPT,
    constraint: Constraint | None = None,
    progress: bool = False,
) -> list[dict]:
    """One row per particle count: the median ms per particle-token over ``seeds`` runs, its
    range, and the model's median share of the time."""
    constraint = Regex(PATTERN) if constraint is None else constraint
    chat = model.has_chat_template  # a base model continues the prompt as plain text
    generate(model, prompt, constraint, particles=2, max_tokens=2, chat=chat, seed=0)  # warm up
    rows = []
    for n in particles:
        per_token, model_share = [], []
        for seed in range(seeds):
            result = generate(model, prompt, constraint, particles=n, max_tokens=max_tokens, chat=chat, seed=seed)
            stats = result.stats
            per_token.append(1000 * stats.total_seconds / max(stats.tokens, 1))
            model_share.append(stats.model_seconds / max(stats.total_seconds, 1e-9))
        rows.append({"particles": n, "ms_per_particle_token": statistics.median(per_token),
                     "range": [min(per_token), max(per_token)], "model_share": statistics.median(model_share)})
        if progress:
            print(f"bench: {model.backend:<9} {n:>3} particles {rows[-1]['ms_per_particle_token']:7.2f} ms per "
                  "particle-token", file=sys.stderr, flush=True)
    return rows


def format_scaling(figures: dict[str, list[dict]], labels: dict[str, str] | None = None) -> str:
    """A Markdown table: a row per particle count, a column per backend (headed by ``labels``,
    e.g. ``"llamacpp (F16)"``, where given)."""
    backends = list(figures)
    heads = [(labels or {}).get(backend, backend) for backend in backends]
    lines = [f"AWRS-SMC, regex `{PATTERN}`; ms per particle-token: median (range; model share)", "",
             "| particles | " + " | ".join(heads) + " |", "|---|" + "---|" * len(backends)]
    for k, row in enumerate(figures[backends[0]]):
        cells = []
        for backend in backends:
            f = figures[backend][k]
            cells.append(f"{f['ms_per_particle_token']:.2f} ({f['range'][0]:.2f}–{f['range'][1]:.2f}; "
                         f"{100 * f['model_share']:.0f} %)")
        lines.append(f"| {row['particles']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_scaling(
    figures: dict[str, list[dict]], path: Path, *, title: str, labels: dict[str, str] | None = None
) -> None:
    """ms per particle-token against particles (both axes log), a line per backend and its
    range, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for backend, rows in figures.items():
        counts = [r["particles"] for r in rows]
        ax.plot(counts, [r["ms_per_particle_token"] for r in rows], marker="o",
                label=(labels or {}).get(backend, backend))
        ax.fill_between(counts, [r["range"][0] for r in rows], [r["range"][1] for r in rows], alpha=0.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(counts, [str(n) for n in counts])
    low = min(r["range"][0] for rows in figures.values() for r in rows)
    high = max(r["range"][1] for rows in figures.values() for r in rows)
    ticks = [t for t in (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 500) if low / 1.5 <= t <= high * 1.5]
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_yticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("particles")
    ax.set_ylabel("ms per particle-token")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
