"""Sampling token ids without replacement, in proportion to their probability mass.

Two ways to produce the same random order, chosen adaptively:

* **Sequential draws** (the common case: a few draws per call). The vocabulary is cut into
  blocks of :data:`BLOCK` tokens whose masses are summed (one vectorised pass for all
  particles, far cheaper than a cumulative sum over the vocabulary); a draw picks a block by
  its sum, then a token inside it. Removing a token re-sums its block exactly, so the mass
  left never drifts however much is rejected, and a draw never lands on a removed token.
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

BLOCK = 256  # tokens per block of summed mass
ORDER_AFTER_DRAWS = 48  # sequential draws in one call before switching to a precomputed order

NO_TOKEN = -1
"""Returned by :meth:`MassDrawer.draw` when no token with positive mass is left."""


def block_sums(mass: np.ndarray) -> np.ndarray:
    """Sums of consecutive :data:`BLOCK`-token blocks along the last axis (the last block may be
    shorter): what :class:`MassDrawer` draws blocks from. Works on one row or a batch."""
    n = mass.shape[-1]
    if n == 0:
        return np.zeros(mass.shape[:-1] + (0,), dtype=np.float64)
    if n % BLOCK == 0:
        return mass.reshape(mass.shape[:-1] + (n // BLOCK, BLOCK)).sum(axis=-1)
    return np.add.reduceat(mass, np.arange(0, n, BLOCK), axis=-1)


class MassDrawer:
    """Draws without replacement from one row of token masses.

    Args:
        mass: (V,) float64, non-negative; not modified.
        rng: the random generator to draw from.
        blocks: ``block_sums(mass)`` if the caller already has it (it is computed in one
            vectorised pass for all particles); not modified.
    """

    __slots__ = (
        "_mass", "_rng", "_blocks", "_block_cum", "_remaining", "_removed", "_removed_in",
        "_draws", "_order", "_position", "_unsorted", "_last", "only_accepted",
    )

    def __init__(
        self, mass: np.ndarray, rng: np.random.Generator, blocks: np.ndarray | None = None
    ) -> None:
        self._mass = mass
        self._rng = rng
        self._blocks = block_sums(mass) if blocks is None else blocks.copy()
        self._block_cum: np.ndarray | None = None  # cumulative block sums, until one changes
        self._remaining: float | None = None
        total = self.remaining
        if not np.isfinite(total):  # a NaN mass would make every draw miss, forever
            raise ModelError(f"token masses must be finite and non-negative; their sum is {total}")
        self._removed: set[int] = set()
        self._removed_in: dict[int, list[int]] = {}  # block -> its removed tokens with mass
        self._draws = 0
        self._order: list[int] | None = None
        self._position = 0
        self._unsorted: tuple[np.ndarray, np.ndarray] | None = None  # (ids, negated keys) not yet in _order
        self._last = NO_TOKEN
        self.only_accepted = False  # set by restrict(..., exact=True): every token left is valid

    def mass(self, token: int) -> float:
        return float(self._mass[token])

    @property
    def remaining(self) -> float:
        """Total mass of the tokens not removed (a sum of exact block sums, never a difference)."""
        if self._remaining is None:
            self._remaining = max(float(self._blocks.sum()), 0.0)
        return self._remaining

    def is_removed(self, token: int) -> bool:
        return token in self._removed

    def remove(self, token: int) -> None:
        if token in self._removed:
            return
        self._removed.add(token)
        if self._mass[token] > 0.0:
            block = token // BLOCK
            self._removed_in.setdefault(block, []).append(token)
            self._blocks[block] = self._block_mass(block).sum()
            self._block_cum = None
            self._remaining = None

    def _block_mass(self, block: int) -> np.ndarray:
        """The masses of one block, removed tokens zeroed."""
        start = block * BLOCK
        segment = self._mass[start:start + BLOCK]
        removed = self._removed_in.get(block)
        if removed:
            segment = segment.copy()
            segment[[t - start for t in removed]] = 0.0
        return segment

    def draw(self) -> int:
        """A token drawn in proportion to the mass left, or NO_TOKEN if none is left."""
        if self._order is not None and self._last != NO_TOKEN and self._last not in self._removed:
            self._order = self._unsorted = None  # a drawn token stayed available: the order no longer applies
        self._draws += 1
        if self._order is None and self._draws > ORDER_AFTER_DRAWS:
            self._start_order()
        token = self._next_in_order() if self._order is not None else self._draw_sequential()
        self._last = token
        return token

    def _draw_sequential(self) -> int:
        while True:
            if self.remaining <= 0.0:
                return NO_TOKEN
            if self._block_cum is None:
                self._block_cum = np.cumsum(self._blocks)
            cum = self._block_cum
            u = self._rng.random() * float(cum[-1])
            block = min(int(np.searchsorted(cum, u, side="right")), len(cum) - 1)
            if self._blocks[block] <= 0.0:
                continue  # rounding at a block's edge: draw again
            within = np.cumsum(self._block_mass(block))
            offset = u - (float(cum[block - 1]) if block else 0.0)
            k = min(int(np.searchsorted(within, offset, side="right")), len(within) - 1)
            token = block * BLOCK + k
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
        self._order = []
        self._position = 0
        self._unsorted = (live, -keys)

    def _extend_order(self) -> bool:
        """Sort the next chunk of the race's order (the order is usually left after a few
        tokens, so sorting the whole vocabulary up front is wasted); False when none is left."""
        if self._unsorted is None or len(self._unsorted[0]) == 0:
            return False
        ids, negated = self._unsorted
        size = min(len(ids), max(64, 2 * len(self._order)))
        if size < len(ids):
            chosen = np.argpartition(negated, size - 1)[:size]
            rest = np.ones(len(ids), dtype=bool)
            rest[chosen] = False
            self._unsorted = (ids[rest], negated[rest])
        else:
            chosen = np.arange(len(ids))
            self._unsorted = None
        # by key, ties by token id: the order a stable sort of the whole race would give
        self._order.extend(ids[chosen[np.lexsort((ids[chosen], negated[chosen]))]].tolist())
        return True

    def _next_in_order(self) -> int:
        mass, removed = self._mass, self._removed
        while self._position < len(self._order) or self._extend_order():
            token = self._order[self._position]
            self._position += 1
            if token not in removed and mass[token] > 0.0:
                return token
        return NO_TOKEN

    def restrict(self, tokens: np.ndarray, *, exact: bool = False, also: np.ndarray | None = None) -> None:
        """Remove every token not in ``tokens`` (used to prune tokens known to be rejected).

        ``tokens``: ids, or a (V,) bool row saying which tokens stay; ``also``: more ids
        that stay (EOS). ``exact``: they are exactly the accepted set, so every token left is
        valid and the mass left is the local normaliser (estimators may then use it as is).
        """
        self.only_accepted = self.only_accepted or exact
        if tokens.dtype == np.bool_:
            kept = np.multiply(self._mass, tokens)  # masses are finite and >= 0: kept exactly or 0
        else:
            kept = np.zeros_like(self._mass)
            kept[tokens] = self._mass[tokens]
        if also is not None and len(also):
            kept[also] = self._mass[also]
        if self._removed:
            kept[list(self._removed)] = 0.0
        self._mass = kept
        self._blocks = block_sums(kept)
        self._removed_in = {}  # removed tokens now have no mass
        self._block_cum = None
        self._remaining = None

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
