"""Sampling token ids without replacement, in proportion to their probability mass.

Drawing tokens one at a time from the mass that is left, removing each rejected token, gives
the same order as sorting Gumbel-perturbed log-probabilities, but costs O(log V) per draw
instead of an O(V log V) sort per call: a draw is a binary search in a cumulative sum, and a
draw that lands on a removed token is simply repeated. Once the removed mass exceeds 95% of
what the cumulative sum covers, the sum is rebuilt without the removed tokens (one O(V) pass,
worth about as much as fifty repeated draws), so the expected number of repeats stays below
twenty however much mass is rejected.

Masses are absolute (not renormalised): the total is the probability of every token that may
be proposed, which is how the AWRS weight carries the mass of pruned tokens.

Not here: which tokens to accept, and the weights (see :mod:`awrs.sampling.awrs`).
"""

from __future__ import annotations

import numpy as np

REBUILD_FRACTION = 0.95

NO_TOKEN = -1
"""Returned by :meth:`MassDrawer.draw` when no token with positive mass is left."""


class MassDrawer:
    """Sequential draws without replacement from one row of token masses.

    Args:
        mass: (V,) float64, non-negative; not modified.
        rng: the random generator to draw from.
        cumsum: ``np.cumsum(mass)`` if the caller already has it (it is computed in one
            vectorised pass for all particles).
    """

    __slots__ = ("_mass", "_rng", "_cum", "_total", "_removed", "_removed_mass")

    def __init__(
        self, mass: np.ndarray, rng: np.random.Generator, cumsum: np.ndarray | None = None
    ) -> None:
        self._mass = mass
        self._rng = rng
        self._cum = np.cumsum(mass) if cumsum is None else cumsum
        self._total = float(self._cum[-1]) if len(self._cum) else 0.0
        self._removed: set[int] = set()
        self._removed_mass = 0.0  # mass removed since the cumulative sum was last built

    def mass(self, token: int) -> float:
        return float(self._mass[token])

    @property
    def remaining(self) -> float:
        """Total mass of the tokens not removed.

        Computed as a difference while that keeps at least ~10 significant digits; summed
        afresh when the remainder is a tiny fraction of the total.
        """
        if self._removed_mass > (1.0 - 1e-6) * self._total:
            self._rebuild()
        return max(self._total - self._removed_mass, 0.0)

    def is_removed(self, token: int) -> bool:
        return token in self._removed

    def remove(self, token: int) -> None:
        if token not in self._removed:
            self._removed.add(token)
            self._removed_mass += float(self._mass[token])

    def draw(self) -> int:
        """A token drawn in proportion to the mass left, or NO_TOKEN if none is left."""
        last = len(self._mass) - 1
        while True:
            if self._removed_mass > REBUILD_FRACTION * self._total:
                self._rebuild()
            if self._total <= 0.0:
                return NO_TOKEN
            u = self._rng.random() * self._total
            token = int(np.searchsorted(self._cum, u, side="right"))
            if token > last:
                token = last
            if token in self._removed or self._mass[token] <= 0.0:
                continue
            return token

    def restrict(self, tokens: np.ndarray) -> None:
        """Remove every token not in ``tokens`` (used to prune tokens known to be rejected)."""
        kept = np.zeros_like(self._mass)
        kept[tokens] = self._mass[tokens]
        if self._removed:
            kept[list(self._removed)] = 0.0
        self._mass = kept
        self._cum = np.cumsum(kept)
        self._total = float(self._cum[-1]) if len(self._cum) else 0.0
        self._removed_mass = 0.0

    def coin(self, probability: float) -> bool:
        """True with the given probability (used for unbiased random truncation)."""
        return probability >= 1.0 or self._rng.random() < probability

    def _rebuild(self) -> None:
        kept = self._mass.copy()
        kept[list(self._removed)] = 0.0
        self._cum = np.cumsum(kept)
        self._total = float(self._cum[-1]) if len(self._cum) else 0.0
        self._removed_mass = 0.0
