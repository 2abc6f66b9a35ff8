"""Resampling schemes: (normalised weights, rng) -> ancestor indices.

Each scheme draws N ancestors so that particle i is chosen w_i * N times in expectation.
Systematic resampling uses one uniform for all draws (lowest variance, the default);
multinomial draws them independently.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import ConfigError

Resampler = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def multinomial(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(weights)
    points = rng.random(n) * weights.sum()
    return np.minimum(np.searchsorted(np.cumsum(weights), points, side="right"), n - 1)


def systematic(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(weights)
    points = (rng.random() + np.arange(n)) / n
    cumulative = np.cumsum(weights)
    cumulative /= cumulative[-1]
    return np.minimum(np.searchsorted(cumulative, points, side="right"), n - 1)


RESAMPLERS: dict[str, Resampler] = {"systematic": systematic, "multinomial": multinomial}


def get_resampler(name: str) -> Resampler:
    try:
        return RESAMPLERS[name]
    except KeyError:
        raise ConfigError(
            f"unknown resampling scheme {name!r}; choose one of {', '.join(RESAMPLERS)}"
        ) from None


def normalized(log_weights: np.ndarray) -> np.ndarray:
    """exp(log_weights) scaled to sum to 1 (all zeros if every weight is zero)."""
    top = np.max(log_weights) if len(log_weights) else -np.inf
    if not np.isfinite(top):
        return np.zeros_like(log_weights, dtype=np.float64)
    w = np.exp(log_weights - top)
    return w / w.sum()


def effective_sample_size(log_weights: np.ndarray) -> float:
    w = normalized(log_weights)
    total = float(np.dot(w, w))
    return 1.0 / total if total > 0 else 0.0


def log_mean_exp(log_weights: np.ndarray) -> float:
    top = np.max(log_weights) if len(log_weights) else -np.inf
    if not np.isfinite(top):
        return -np.inf
    return float(top + np.log(np.mean(np.exp(log_weights - top))))
