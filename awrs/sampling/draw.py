"""Sampling token ids without replacement, in proportion to their probability mass.

Two ways to produce the same random order, chosen adaptively:

* **Sequential draws** (the common case: a few draws per call). A draw is a binary search in
  the cumulative sum of the masses; a draw that lands on a removed token is repeated. Once the
  removed mass exceeds 95% of what the cumulative sum covers, the sum is rebuilt without the
  removed tokens (one O(V) pass), so repeats stay few however much mass is rejected.
* **A precomputed order** (after many draws in one call, when the model strongly disagrees
  with the constraint). The remaining tokens are sorted once by Gumbel-perturbed log mass,
  then served in that order at O(1) each. By the memorylessness of the exponential race, the
  order of the tokens left after any prefix is a fresh without-replacement sample, so switching
  mid-call changes nothing in distribution. The order is dropped if a drawn token is kept
  (AWRS's second loop may redraw its accepted token, which the order would never do).

Masses are absolute (not renormalised): the total is the probability of every token that may
be proposed, which is how the AWRS weight carries the mass of pruned tokens.

Not here: which tokens to accept, and the weights (see :mod:`awrs.sampling.awrs`).
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelError

REBUILD_FRACTION = 0.95
ORDER_AFTER_DRAWS = 48  # sequential draws in one call before switching to a precomputed order

NO_TOKEN = -1
"""Returned by :meth:`MassDrawer.draw` when no token with positive mass is left."""


class MassDrawer:
    """Draws without replacement from one row of token masses.

    Args:
        mass: (V,) float64, non-negative; not modified.
        rng: the random generator to draw from.
        cumsum: ``np.cumsum(mass)`` if the caller already has it (it is computed in one
            vectorised pass for all particles).
    """

    __slots__ = (
        "_mass", "_rng", "_cum", "_total", "_removed", "_removed_mass",
        "_draws", "_order", "_position", "_last", "only_accepted",
    )

    def __init__(
        self, mass: np.ndarray, rng: np.random.Generator, cumsum: np.ndarray | None = None
    ) -> None:
        self._mass = mass
        self._rng = rng
        self._cum = np.cumsum(mass) if cumsum is None else cumsum
        self._total = float(self._cum[-1]) if len(self._cum) else 0.0
        if not np.isfinite(self._total):  # a NaN mass would make every draw miss, forever
            raise ModelError(f"token masses must be finite and non-negative; their sum is {self._total}")
        self._removed: set[int] = set()
        self._removed_mass = 0.0  # mass removed since the cumulative sum was last built
        self._draws = 0
        self._order: list[int] | None = None
        self._position = 0
        self._last = NO_TOKEN
        self.only_accepted = False  # set by restrict(..., exact=True): every token left is valid

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
        if self._order is not None and self._last != NO_TOKEN and self._last not in self._removed:
            self._order = None  # a drawn token stayed available: the order no longer applies
        self._draws += 1
        if self._order is None and self._draws > ORDER_AFTER_DRAWS:
            self._start_order()
        token = self._next_in_order() if self._order is not None else self._draw_sequential()
        self._last = token
        return token

    def _draw_sequential(self) -> int:
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

    def _start_order(self) -> None:
        alive = self._mass > 0.0
        if self._removed:
            alive[list(self._removed)] = False
        live = np.flatnonzero(alive)
        with np.errstate(divide="ignore"):
            keys = np.log(self._mass[live]) + self._rng.gumbel(size=len(live))
        self._order = live[np.argsort(-keys, kind="stable")].tolist()
        self._position = 0

    def _next_in_order(self) -> int:
        order, mass, removed = self._order, self._mass, self._removed
        while self._position < len(order):
            token = order[self._position]
            self._position += 1
            if token not in removed and mass[token] > 0.0:
                return token
        return NO_TOKEN

    def restrict(self, tokens: np.ndarray, *, exact: bool = False) -> None:
        """Remove every token not in ``tokens`` (used to prune tokens known to be rejected).

        ``exact``: ``tokens`` is exactly the accepted set, so every token left is valid and
        the mass left is the local normaliser (estimators may then use it as is).
        """
        self.only_accepted = self.only_accepted or exact
        kept = np.zeros_like(self._mass)
        kept[tokens] = self._mass[tokens]
        if self._removed:
            kept[list(self._removed)] = 0.0
        self._mass = kept
        self._cum = np.cumsum(kept)
        self._total = float(self._cum[-1]) if len(self._cum) else 0.0
        self._removed_mass = 0.0

    def poisson_sample(self, horizon: float) -> list[int]:
        """Continue the exponential race from time 0 up to ``horizon``: the tokens whose
        clocks ring first, removed and returned in arrival order.

        Given the order of arrivals, the gaps between them are independent exponentials with
        the rate of the mass still in the race, so each token is included independently with
        probability 1 - exp(-mass * horizon), which is all the Poisson estimator needs.
        """
        arrived: list[int] = []
        clock = 0.0
        while True:
            left = self.remaining
            if left <= 0.0:
                return arrived
            clock += self._rng.exponential() / left
            if clock >= horizon:
                return arrived
            token = self.draw()
            if token == NO_TOKEN:
                return arrived
            self.remove(token)
            arrived.append(token)

    def coin(self, probability: float) -> bool:
        """True with the given probability (used for unbiased random truncation)."""
        return probability >= 1.0 or self._rng.random() < probability

    def _rebuild(self) -> None:
        kept = self._mass.copy()
        if self._removed:
            kept[list(self._removed)] = 0.0
        self._cum = np.cumsum(kept)
        self._total = float(self._cum[-1]) if len(self._cum) else 0.0
        self._removed_mass = 0.0
