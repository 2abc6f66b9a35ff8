"""Token samplers: one interface for AWRS and the baselines it is compared with.

A token sampler gets one particle's next-token masses and a checker for that particle's
constraint state, and returns a :class:`~awrs.sampling.awrs.Draw`: the token and the log
incremental weight. SMC (:mod:`awrs.smc`) calls it for every live particle after one batched
model call.

=================  =========================================================  =============
sampler            what it does                                               checks/token
=================  =========================================================  =============
``AWRS``           adaptive weighted rejection sampling (properly weighted)   a few
``AWRS("lcd")``    the same loop without weights: locally constrained         a few
``Masking``        checks every token; exact local normaliser                 |V|
``Unconstrained``  the model as it is; the constraint is checked at the end   0
``Rejection``      one draw per step, a rejected draw kills the particle      1
=================  =========================================================  =============
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod

import numpy as np

from ..constraints.base import DEAD, Constraint, State
from ..errors import ConfigError, ConstraintError
from ..stats import Stats
from ..vocab import Vocabulary
from .awrs import DEFAULT_ROULETTE, ESTIMATORS, Draw, remainder
from .draw import NO_TOKEN, MassDrawer


class TokenChecker:
    """Checks candidate tokens of one particle at one step, each at most once.

    EOS ids are accepted when the text so far is complete; other tokens when the constraint
    can still be satisfied after their bytes. Calls are counted and timed in ``stats``.
    """

    __slots__ = ("_constraint", "_state", "_vocab", "_stats", "_after", "_complete")

    def __init__(self, constraint: Constraint, state: State, vocab: Vocabulary, stats: Stats):
        self._constraint = constraint
        self._state = state
        self._vocab = vocab
        self._stats = stats
        self._after: dict[int, State] = {}
        self._complete: bool | None = None

    @property
    def eos_ids(self) -> np.ndarray:
        return self._vocab.eos_array

    @property
    def exact_masks(self) -> bool:
        return self._constraint.exact_masks

    def candidates(self) -> np.ndarray | None:
        """Token ids that may be accepted, from the constraint's hint; None if any may.

        EOS ids are always included (they are checked with ``is_complete``).
        """
        started = time.perf_counter()
        ids = self._constraint.candidate_tokens(self._state, self._vocab)
        self._stats.constraint_seconds += time.perf_counter() - started
        self._stats.constraint_checks += 1
        if ids is None:
            return None
        return np.concatenate([np.asarray(ids, dtype=np.int64), self._vocab.eos_array])

    def is_complete(self) -> bool:
        if self._complete is None:
            started = time.perf_counter()
            self._complete = bool(self._constraint.is_complete(self._state))
            self._stats.constraint_seconds += time.perf_counter() - started
            self._stats.constraint_checks += 1
        return self._complete

    def __call__(self, token: int) -> bool:
        if token in self._vocab.eos_ids:
            return self.is_complete()
        after = self._after.get(token)
        if after is None:
            started = time.perf_counter()
            after = self._constraint.advance(self._state, self._vocab.tokens[token])
            self._stats.record_check(time.perf_counter() - started)
            self._stats.constraint_checks += 1
            self._after[token] = after
        return after is not DEAD

    def state_after(self, token: int) -> State:
        """The constraint state after an accepted token (unchanged for EOS)."""
        if token in self._vocab.eos_ids:
            return self._state
        if token not in self._after:
            self(token)
        return self._after[token]


def _only(mass: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    kept = np.zeros_like(mass)
    kept[tokens] = mass[tokens]
    return kept


def _hint_pruner(accept: TokenChecker):
    """Prune the tokens the constraint's hint rules out (see Constraint.next_bytes)."""

    def prune(drawer) -> None:
        candidates = accept.candidates()
        if candidates is not None:
            drawer.restrict(candidates)

    return prune


def _masked_draw(mass: np.ndarray, accept: TokenChecker, rng, weighted: bool) -> Draw:
    """With an exact mask the local normaliser is known: one draw, one check, exact weight.

    Only EOS needs a check to know whether it is in the mask (``is_complete``).
    """
    candidates = accept.candidates()
    if candidates is None:
        raise ConstraintError("a constraint with exact_masks returned no mask")
    eos = accept.eos_ids
    if not accept.is_complete():
        candidates = candidates[~np.isin(candidates, eos)]
    masked = _only(mass, candidates)
    drawer = MassDrawer(masked, rng)
    token = drawer.draw()
    if token == NO_TOKEN:
        return Draw(NO_TOKEN, -math.inf, 0)
    if not accept(token):
        raise ConstraintError(
            f"the constraint's exact mask allowed token {token} that advance() rejects"
        )
    return Draw(token, math.log(drawer.remaining) if weighted else 0.0, 0)


class TokenSampler(ABC):
    """Proposes one token per particle per step, with a log incremental weight."""

    name: str = "sampler"
    #: weights are importance weights (SMC may resample on them and report a likelihood).
    weighted: bool = True
    #: the constraint is checked while generating (otherwise only finished texts are checked).
    checks_during_generation: bool = True

    @abstractmethod
    def propose(
        self, mass: np.ndarray, cumsum: np.ndarray, accept: TokenChecker, rng: np.random.Generator
    ) -> Draw:
        """Propose a token from ``mass`` (V,) float64 with ``cumsum`` = np.cumsum(mass)."""

    def force_eos(
        self, mass: np.ndarray, accept: TokenChecker, eos: np.ndarray, rng: np.random.Generator
    ) -> Draw:
        """End the text at the token limit; weight p(EOS) targets p(x | length <= limit)."""
        token = int(eos[0])
        if not accept(token):
            return Draw(NO_TOKEN, -math.inf, 1)
        if not self.weighted:
            return Draw(token, 0.0, 0)
        eos_mass = float(mass[eos].sum())
        return Draw(token, math.log(eos_mass) if eos_mass > 0 else -math.inf, 0)


class AWRS(TokenSampler):
    """Adaptive weighted rejection sampling (see :mod:`awrs.sampling.awrs`).

    Args:
        estimator: ``"remainder"`` (default, lowest variance), ``"two-loop"`` (the paper's) or
            ``"lcd"`` (no weights: fast locally constrained decoding).
        roulette: the remainder estimator's truncation parameter theta (0 disables truncation).
    """

    def __init__(self, estimator: str = "remainder", *, roulette: float = DEFAULT_ROULETTE):
        if estimator not in ESTIMATORS:
            raise ConfigError(
                f"unknown AWRS estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}"
            )
        if roulette < 0:
            raise ConfigError(f"roulette must be >= 0, got {roulette}")
        self.estimator = estimator
        self.roulette = roulette
        self.name = "lcd" if estimator == "lcd" else f"awrs[{estimator}]"
        self.weighted = estimator != "lcd"
        self._estimate = ESTIMATORS[estimator]

    def propose(self, mass, cumsum, accept, rng) -> Draw:
        if accept.exact_masks:
            return _masked_draw(mass, accept, rng, self.weighted)
        drawer = MassDrawer(mass, rng, cumsum)
        prune = _hint_pruner(accept)
        if self._estimate is remainder:
            return remainder(drawer, accept, prune, roulette=self.roulette)
        return self._estimate(drawer, accept, prune)


class Masking(TokenSampler):
    """Token masking: checks every token, samples from the masked distribution.

    Its weight is the exact local normaliser Z (``weighted=True``) or 1 (plain locally
    constrained decoding, the distribution every mask engine samples from).
    """

    def __init__(self, *, weighted: bool = True):
        self.weighted = weighted
        self.name = "masking" + ("-weighted" if weighted else "")

    def propose(self, mass, cumsum, accept, rng) -> Draw:
        candidates = accept.candidates()
        if candidates is not None:
            mass = _only(mass, candidates)
        allowed = np.fromiter((accept(t) for t in range(len(mass))), dtype=bool, count=len(mass))
        masked = np.where(allowed, mass, 0.0)
        drawer = MassDrawer(masked, rng)
        token = drawer.draw()
        rejections = int(len(mass) - allowed.sum())
        if token == NO_TOKEN:
            return Draw(NO_TOKEN, -math.inf, rejections)
        weight = math.log(drawer.remaining) if self.weighted else 0.0
        return Draw(token, weight, rejections)


class Unconstrained(TokenSampler):
    """The model's own distribution (special non-EOS tokens excluded); no checks."""

    name = "unconstrained"
    weighted = False
    checks_during_generation = False

    def propose(self, mass, cumsum, accept, rng) -> Draw:
        token = MassDrawer(mass, rng, cumsum).draw()
        return Draw(token, 0.0 if token != NO_TOKEN else -math.inf, 0)

    def force_eos(self, mass, accept, eos, rng) -> Draw:
        return Draw(int(eos[0]), 0.0, 0)


class Rejection(TokenSampler):
    """Whole-sequence rejection sampling, stopped as soon as the prefix is rejected.

    Each particle draws from the model; the first rejected token kills it. A survivor is an
    exact sample of p(x | constraint, length <= limit), as if a whole sequence had been drawn
    and checked at the end.
    """

    name = "rejection"
    weighted = False

    def propose(self, mass, cumsum, accept, rng) -> Draw:
        token = MassDrawer(mass, rng, cumsum).draw()
        if token == NO_TOKEN or not accept(token):
            return Draw(NO_TOKEN, -math.inf, 1)
        return Draw(token, 0.0, 0)

    def force_eos(self, mass, accept, eos, rng) -> Draw:
        # The sequence must end here to stay within the limit: only a drawn EOS survives.
        token = MassDrawer(mass, rng).draw()
        if token != NO_TOKEN and bool(np.any(eos == token)) and accept(token):
            return Draw(token, 0.0, 0)
        return Draw(NO_TOKEN, -math.inf, 1)
