"""Combining constraints: intersection (``All`` / ``&``) and soft scores attached to one.

``All(a, b)`` accepts a text when every part does; its state is the tuple of the parts'
states, so particles still share them. Hints and masks combine by intersection: the
candidate tokens (and the token mask) are the intersection of the parts' sets, and the mask is
exact only when every part has an exact mask.

``Scored(constraint, score)`` keeps the constraint's hard check and carries a soft score
``score(text, finished) -> log weight``, which SMC applies as a critic (a twist on prefixes,
a factor on finished texts).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..errors import ConfigError
from .base import DEAD, Constraint, State

Score = Callable[[str, bool], float]


class All(Constraint):
    """Texts accepted by every one of ``constraints``."""

    def __init__(self, *constraints: Constraint) -> None:
        flat: list[Constraint] = []
        for c in constraints:
            if not isinstance(c, Constraint):
                raise ConfigError(f"All() takes constraints, got {type(c).__name__}")
            flat.extend(c.parts if isinstance(c, All) else [c])
        if not flat:
            raise ConfigError("All() needs at least one constraint")
        self.parts: tuple[Constraint, ...] = tuple(flat)
        self.exact_masks = all(c.exact_masks for c in flat)
        costs = [c.mask_cost for c in flat if c.mask_cost != math.inf]
        self.mask_cost = sum(costs) if costs else math.inf

    @property
    def timeouts(self) -> int:
        return sum(getattr(c, "timeouts", 0) for c in self.parts)

    def describe(self) -> str:
        return " and ".join(c.describe() for c in self.parts)

    def __repr__(self) -> str:
        return "All(" + ", ".join(map(repr, self.parts)) + ")"

    def start(self) -> tuple:
        return tuple(c.start() for c in self.parts)

    def advance(self, state: State, data: bytes) -> State:
        out = []
        for c, s in zip(self.parts, state):
            s = c.advance(s, data)
            if s is DEAD:
                return DEAD
            out.append(s)
        return tuple(out)

    def is_complete(self, state: State) -> bool:
        return all(c.is_complete(s) for c, s in zip(self.parts, state))

    def next_bytes(self, state: State) -> frozenset[int] | None:
        allowed: frozenset[int] | None = None
        for c, s in zip(self.parts, state):
            mine = c.next_bytes(s)
            if mine is not None:
                allowed = mine if allowed is None else allowed & mine
        return allowed

    def candidate_tokens(self, state: State, vocab) -> np.ndarray | None:
        kept: np.ndarray | None = None
        for c, s in zip(self.parts, state):
            mine = c.candidate_tokens(s, vocab)
            if mine is not None:
                mine = np.asarray(mine, dtype=np.int64)
                kept = mine if kept is None else np.intersect1d(kept, mine, assume_unique=False)
        return kept

    def token_mask(self, state: State, vocab) -> np.ndarray | None:
        kept: np.ndarray | None = None
        for c, s in zip(self.parts, state):
            mine = c.token_mask(s, vocab)
            if mine is not None:
                kept = mine if kept is None else np.intersect1d(kept, mine, assume_unique=True)
        return kept

    def mask_key(self, state: State):
        keys = tuple(c.mask_key(s) for c, s in zip(self.parts, state))
        return None if any(k is None for k in keys) else keys

    @property
    def critic(self) -> Score | None:
        scores = [c.critic for c in self.parts if getattr(c, "critic", None) is not None]
        if not scores:
            return None
        return lambda text, finished: sum(score(text, finished) for score in scores)


class Scored(Constraint):
    """A constraint with a soft score that SMC applies as a critic."""

    def __init__(self, constraint: Constraint, score: Score) -> None:
        if not callable(score):
            raise ConfigError("score must be a function (text, finished) -> log weight")
        self.base = constraint
        self.score: Score = score
        self.exact_masks = constraint.exact_masks
        self.mask_cost = constraint.mask_cost

    @property
    def critic(self) -> Score:
        """This score plus any the wrapped constraint carries (``a.scored(f) & b`` wrapped again)."""
        inner = getattr(self.base, "critic", None)
        if inner is None:
            return self.score
        score = self.score
        return lambda text, finished: score(text, finished) + inner(text, finished)

    def describe(self) -> str:
        return f"{self.base.describe()} (scored)"

    def start(self) -> State:
        return self.base.start()

    def advance(self, state: State, data: bytes) -> State:
        return self.base.advance(state, data)

    def is_complete(self, state: State) -> bool:
        return self.base.is_complete(state)

    def next_bytes(self, state: State) -> frozenset[int] | None:
        return self.base.next_bytes(state)

    def candidate_tokens(self, state: State, vocab) -> np.ndarray | None:
        return self.base.candidate_tokens(state, vocab)

    def token_mask(self, state: State, vocab) -> np.ndarray | None:
        return self.base.token_mask(state, vocab)

    def mask_key(self, state: State):
        return self.base.mask_key(state)

    @property
    def timeouts(self) -> int:
        return getattr(self.base, "timeouts", 0)
