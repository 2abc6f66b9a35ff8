"""Fit the budget twist's logistic model (awrs/smc/budget.py) to particle trajectories.

Reads the lines of ``bench/budget_traces.py`` (independent AWRS particles on the tuning
instances) and fits ``P(finished within r more tokens | features)`` by logistic regression,
each domain weighted equally. Every step of a trajectory gives examples for its real budget
and for smaller ones: a particle that ended after k more tokens would have ended within any
budget r >= k (its tokens do not depend on the limit until the limit is reached), and not
within a smaller one. Prints the weights (for ``awrs.smc.budget.FITTED``) and, per domain, the
log loss against a constant model and the calibration by decile.

    python bench/fit_budget_twist.py traces.jsonl[.gz] [--domains json] [--budgets 6] [--seed 0]

The tuning traces the shipped weights came from: bench/data/budget-traces-tune.jsonl.gz.
"""

from __future__ import annotations

import argparse
import gzip
import json

from collections import defaultdict

import numpy as np

FEATURES = ("1", "log1p(left)", "log1p(needed)", "log1p(stall)", "log1p(tokens)", "log1p(free)")


def features(left, needed, stall, tokens, free) -> np.ndarray:
    return np.stack([np.ones_like(left, dtype=float), np.log1p(left), np.log1p(needed),
                     np.log1p(stall), np.log1p(tokens), np.log1p(free)], axis=-1)


def progress_of(row: dict) -> tuple[np.ndarray, ...]:
    """Per step: tokens written, bytes needed, tokens since needed changed, tokens since a rejection."""
    t = np.asarray(row["t"], dtype=float)
    b = np.asarray(row["b"], dtype=float)
    rej = np.asarray(row.get("rej") or [0] * len(t), dtype=float)
    stall = np.zeros(len(t))
    free = np.zeros(len(t))
    for k in range(len(t)):
        stall[k] = stall[k - 1] + 1 if k and b[k] == b[k - 1] else 0
        free[k] = 0 if rej[k] > 0 else (free[k - 1] + 1 if k else 1)
    return t, b, stall, free


def examples(rows: list[dict], budgets: int, rng: np.random.Generator):
    xs, ys, ws, domains = [], [], [], []
    per_domain = defaultdict(int)
    for row in rows:
        per_domain[row["domain"]] += 1
    for row in rows:
        if not row["t"]:
            continue
        t, b, stall, free = progress_of(row)
        limit = row["max_tokens"]
        left_real = limit - t
        text_end = None if row["end"] is None else row["end"] - 1  # text tokens (EOS excluded)
        needs = np.full(len(t), np.inf) if text_end is None else text_end - t
        for _ in range(budgets):
            left = np.where(rng.random(len(t)) < 0.3, left_real,
                            np.maximum(1, np.floor(rng.random(len(t)) * left_real)))
            xs.append(features(left, b, stall, t, free))
            ys.append((needs <= left).astype(float))
            ws.append(np.full(len(t), 1.0 / (per_domain[row["domain"]] * len(t) * budgets)))
            domains.extend([row["domain"]] * len(t))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ws), np.asarray(domains)


def fit_logistic(x, y, w, l2=1e-3, iterations=50) -> np.ndarray:
    beta = np.zeros(x.shape[1])
    w = w / w.sum()
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-(x @ beta)))
        gradient = x.T @ (w * (p - y)) + l2 * beta
        hessian = (x * (w * p * (1 - p))[:, None]).T @ x + l2 * np.eye(len(beta))
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return beta


def future_weights(rows: list[dict]) -> None:
    """How well the features predict a finished particle's remaining log weight (the structure
    it has yet to pay for): least squares per domain, R^2 printed."""
    by_domain = defaultdict(lambda: ([], []))
    for row in rows:
        if row["end"] is None or row.get("final_logw") is None or not row["t"]:
            continue
        t, b, stall, free = progress_of(row)
        left = row["max_tokens"] - t
        xs, ys = by_domain[row["domain"]]
        xs.append(features(left, b, stall, t, free))
        ys.append(row["final_logw"] - np.asarray(row["logw"]))
    for domain, (xs, ys) in sorted(by_domain.items()):
        x, y = np.concatenate(xs), np.concatenate(ys)
        beta, *_ = np.linalg.lstsq(x, y, rcond=None)
        residual = y - x @ beta
        r2 = 1 - residual.var() / max(y.var(), 1e-12)
        print(f"{domain}: future log weight mean {y.mean():.2f} sd {y.std():.2f}; R^2 {r2:.3f}; "
              "weights " + " ".join(f"{v:+.2f}" for v in beta))


def log_loss(p, y) -> float:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("traces")
    parser.add_argument("--budgets", type=int, default=6, help="budgets drawn per step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--domains", default=None, help="comma-separated subset")
    args = parser.parse_args(argv)
    opener = gzip.open if args.traces.endswith(".gz") else open
    with opener(args.traces, "rt") as handle:
        rows = [json.loads(line) for line in handle]
    if args.domains:
        rows = [r for r in rows if r["domain"] in args.domains.split(",")]
    rng = np.random.default_rng(args.seed)
    x, y, w, domains = examples(rows, args.budgets, rng)
    beta = fit_logistic(x, y, w)
    print("weights:", "(" + ", ".join(f"{b:.4f}" for b in beta) + ")")
    for name, value in zip(FEATURES, beta):
        print(f"  {name:>14} {value:+.4f}")
    p = 1 / (1 + np.exp(-(x @ beta)))
    for domain in sorted(set(domains)):
        mask = domains == domain
        base = np.full(mask.sum(), y[mask].mean())
        own = fit_logistic(x[mask], y[mask], w[mask])
        p_own = 1 / (1 + np.exp(-(x[mask] @ own)))
        print(f"{domain}: {mask.sum()} examples, rate {y[mask].mean():.3f}, log loss constant "
              f"{log_loss(base, y[mask]):.4f} pooled {log_loss(p[mask], y[mask]):.4f} "
              f"own {log_loss(p_own, y[mask]):.4f}; own weights "
              + " ".join(f"{v:+.2f}" for v in own))
        order = np.argsort(p[mask])
        deciles = np.array_split(order, 10)
        print("  calibration (pooled): " + " ".join(
            f"{p[mask][d].mean():.2f}/{y[mask][d].mean():.2f}" for d in deciles if len(d)))
    future_weights(rows)
    finished = sum(r["end"] is not None for r in rows)
    print(f"{len(rows)} particles, {finished} finished ({finished / max(len(rows), 1):.3f})")



if __name__ == "__main__":
    main()
