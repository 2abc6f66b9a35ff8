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
                   decoding
``Masking``        checks every token; exact local normaliser                 |V|
``Unconstrained``  the model as it is; the constraint is checked at the end   0
``Rejection``      one draw per step, a rejected draw kills the particle      1
=================  =========================================================  =============

Masks. A constraint with a mask engine (:meth:`~awrs.constraints.base.Constraint.token_mask`,
e.g. a regular :class:`~awrs.constraints.regex.Regex`) can name every allowed token at once.
AWRS decides per particle and step whether asking is worth it (``masks="auto"``): rejected
draws are cheap checks, a mask is one whole-vocabulary computation, so it keeps drawing until
the checks of this step have cost as much as a mask is expected to (the mean of the masks it
computed so far), then removes every token outside the mask -- the rule that never pays more
than twice the cheaper choice in hindsight. Removing tokens a mask rules out is removing known
rejections, which keeps the weights exact. ``masks="always"`` asks before the first draw (with an
exact mask: one draw, one check, the exact normaliser as weight); ``"never"`` checks only.
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

MASK_MODES = ("auto", "always", "never")
INITIAL_MASK_SECONDS = 1e-3  # what a first mask is assumed to cost, before any was measured


class TokenChecker:
    """Checks candidate tokens of one particle at one step, each at most once.

    EOS ids are accepted when the text so far is complete; other tokens when the constraint
    can still be satisfied after their bytes. Calls are counted and timed in ``stats``.
    """

    __slots__ = ("_constraint", "_state", "_vocab", "_stats", "_after", "_complete", "spent")

    def __init__(self, constraint: Constraint, state: State, vocab: Vocabulary, stats: Stats):
        self._constraint = constraint
        self._state = state
        self._vocab = vocab
        self._stats = stats
        self._after: dict[int, State] = {}
        self._complete: bool | None = None
        self.spent = 0.0  # seconds of token checks so far

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

    def mask(self) -> np.ndarray | None:
        """The constraint's token mask with EOS ids added; None if it has no mask engine."""
        started = time.perf_counter()
        ids = self._constraint.token_mask(self._state, self._vocab)
        elapsed = time.perf_counter() - started
        self._stats.constraint_seconds += elapsed
        if ids is None:
            return None
        self._stats.masks += 1
        self._stats.mask_seconds += elapsed
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
            elapsed = time.perf_counter() - started
            self.spent += elapsed
            self._stats.record_check(elapsed)
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


class _Pruner:
    """Removes tokens known to be rejected while AWRS's first loop runs.

    After the first rejection it applies the constraint's cheap hint; in ``"auto"`` mode it
    then applies the token mask once this step's checks have cost as much as a mask is
    expected to (``"always"``: at the first call; ``"never"``: not at all).
    """

    __slots__ = ("_accept", "_sampler", "_hinted", "_masking")

    def __init__(self, accept: TokenChecker, sampler: AWRS, *, masking: bool = True) -> None:
        self._accept = accept
        self._sampler = sampler
        self._hinted = False
        self._masking = masking and sampler.masks != "never"

    def __call__(self, drawer) -> bool:
        if not self._hinted:
            self._hinted = True
            candidates = self._accept.candidates()
            if candidates is not None:
                drawer.restrict(candidates)
        if self._masking and (
            self._sampler.masks == "always" or self._accept.spent >= self._sampler.expected_mask_seconds
        ):
            self._masking = False
            started = time.perf_counter()
            mask = self._accept.mask()
            if mask is not None:  # None: no mask engine, or none for this text; checks only
                drawer.restrict(mask)
                self._sampler.record_mask(time.perf_counter() - started)
        return self._masking


def _masked_draw(
    mass: np.ndarray, candidates: np.ndarray, accept: TokenChecker, rng, weighted: bool
) -> Draw:
    """With an exact mask the local normaliser is known: one draw, one check, exact weight.

    Only EOS needs a check to know whether it is in the mask (``is_complete``).
    """
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
        masks: when to use the constraint's token masks: ``"auto"`` (when the checks of a step
            have cost as much as a mask; see the module docstring), ``"always"`` or ``"never"``.
            The two-loop estimator prunes only before its first loop, so under ``"auto"`` it
            never masks.
        initial_mask_seconds: what a mask is assumed to cost until one has been measured.
    """

    def __init__(
        self, estimator: str = "remainder", *, roulette: float = DEFAULT_ROULETTE, masks: str = "auto",
        initial_mask_seconds: float = INITIAL_MASK_SECONDS,
    ):
        if estimator not in ESTIMATORS:
            raise ConfigError(
                f"unknown AWRS estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}"
            )
        if roulette < 0:
            raise ConfigError(f"roulette must be >= 0, got {roulette}")
        if masks not in MASK_MODES:
            raise ConfigError(f"unknown masks mode {masks!r}; choose one of {', '.join(MASK_MODES)}")
        self.estimator = estimator
        self.roulette = roulette
        self.masks = masks
        self.name = "lcd" if estimator == "lcd" else f"awrs[{estimator}]"
        self.weighted = estimator != "lcd"
        self._estimate = ESTIMATORS[estimator]
        self._initial_mask_seconds = initial_mask_seconds
        self._mask_seconds = 0.0
        self._mask_count = 0

    @property
    def expected_mask_seconds(self) -> float:
        """The mean cost of the masks computed so far (a guess before the first)."""
        if not self._mask_count:
            return self._initial_mask_seconds
        return self._mask_seconds / self._mask_count

    def record_mask(self, seconds: float) -> None:
        self._mask_seconds += seconds
        self._mask_count += 1

    def propose(self, mass, cumsum, accept, rng) -> Draw:
        tried_mask = False
        if self.masks == "always" and accept.exact_masks:
            mask = accept.mask()
            if mask is not None:
                return _masked_draw(mass, mask, accept, rng, self.weighted)
            tried_mask = True  # no mask for this text (e.g. bytes the vocabulary cannot spell)
        drawer = MassDrawer(mass, rng, cumsum)
        prune = _Pruner(accept, self, masking=not tried_mask)
        if self.masks == "always":
            prune(drawer)  # hint and mask before the first draw
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
