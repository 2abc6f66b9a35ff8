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

Masks. A constraint with a mask engine (its checker's
:meth:`~awrs.constraints.checker.Checker.token_mask`, e.g. a regular
:class:`~awrs.constraints.regex.pattern.Regex`) can name every allowed token at once.
AWRS decides per particle and step whether asking is worth it (``masks="auto"``): rejected
draws are cheap checks, a mask is one whole-vocabulary computation, so it keeps drawing until
this step's rejections have cost as much as a mask (the checker's fixed ``mask_cost``, in
checks) -- ski rental, which never pays more than twice the cheaper choice in hindsight -- and
then removes every token outside the mask. A mask this run has already computed (same
``mask_key``, e.g. the same automaton state) costs nothing more, so it is used before the
first draw. No decision reads a clock: the same seed gives the same samples on any machine.
Removing tokens a mask rules out is removing known rejections, which keeps the weights exact;
with an exact mask the mass left *is* the normaliser, and the weight is exact.
``masks="always"`` asks before the first draw; ``"never"`` checks only.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from functools import partial

import numpy as np

from ..constraints.base import DEAD, State
from ..constraints.checker import Checker
from ..errors import ConfigError
from ..stats import Stats
from .awrs import DEFAULT_POISSON_VARIANCE, DEFAULT_ROULETTE, ESTIMATORS, Draw, exact, forced_eos
from .draw import NO_TOKEN, MassDrawer

MASK_MODES = ("auto", "always", "never")


class TokenChecker:
    """Checks candidate tokens of one particle at one step, each at most once.

    EOS ids are accepted when the text so far is complete; other tokens when the constraint
    can still be satisfied after their bytes. ``checker`` is the constraint compiled for the
    model's vocabulary (:meth:`~awrs.constraints.base.Constraint.compile`). Calls are counted
    and timed in ``stats``.
    """

    __slots__ = ("_after", "_checker", "_complete", "_ok", "_state", "_stats", "_vocab", "spent")

    def __init__(self, checker: Checker, state: State, stats: Stats):
        self._checker = checker
        self._state = state
        self._vocab = checker.vocab
        self._stats = stats
        self._after: dict[int, State] = {}  # states built so far
        self._ok: dict[int, bool] = {}  # verdicts so far
        self._complete: bool | None = None
        self.spent = 0.0  # seconds of token checks so far (reported, never used to decide)

    @property
    def eos_ids(self) -> np.ndarray:
        return self._vocab.eos_array

    @property
    def exact_masks(self) -> bool:
        return self._checker.exact_masks

    @property
    def mask_cost(self) -> float:
        """What a mask costs, in checks (the checker's fixed price)."""
        return self._checker.mask_cost

    def mask_key(self):
        return self._checker.mask_key(self._state)

    def candidates(self) -> np.ndarray | None:
        """Token ids that may be accepted, from the checker's hint; None if any may.

        EOS ids are always included (they are checked with ``is_complete``).
        """
        ids = self._candidate_ids()
        if ids is None:
            return None
        return np.concatenate([np.asarray(ids, dtype=np.int64), self._vocab.eos_array])

    def candidate_filter(self) -> np.ndarray | None:
        """:meth:`candidates` as a (V,) bool row, EOS ids excluded (the caller adds them)."""
        ids = self._candidate_ids()
        return None if ids is None else self._vocab.membership(ids)

    def mask_filter(self) -> np.ndarray | None:
        """The checker's token mask as a (V,) bool row, EOS ids excluded (the caller adds them);
        None if it has no mask engine."""
        ids = self._mask_ids()
        return None if ids is None else self._vocab.membership(ids)

    def _candidate_ids(self) -> np.ndarray | None:
        started = time.perf_counter()
        ids = self._checker.candidate_tokens(self._state)
        self._stats.constraint_seconds += time.perf_counter() - started
        self._stats.constraint_checks += 1
        return ids

    def _mask_ids(self) -> np.ndarray | None:
        started = time.perf_counter()
        ids = self._checker.token_mask(self._state)
        elapsed = time.perf_counter() - started
        self._stats.constraint_seconds += elapsed
        if ids is not None:
            self._stats.masks += 1
            self._stats.mask_seconds += elapsed
        return ids

    def is_complete(self) -> bool:
        if self._complete is None:
            started = time.perf_counter()
            self._complete = bool(self._checker.is_complete(self._state))
            self._stats.constraint_seconds += time.perf_counter() - started
            self._stats.constraint_checks += 1
        return self._complete

    def __call__(self, token: int) -> bool:
        if token in self._vocab.eos_ids:
            return self.is_complete()
        known = self._ok.get(token)
        if known is None:
            started = time.perf_counter()
            if self._checker.cheap_checks:  # check only; the kept token's state comes later
                known = self._checker.accepts_token(self._state, token)
            else:
                after = self._checker.advance_token(self._state, token)
                self._after[token] = after
                known = after is not DEAD
            elapsed = time.perf_counter() - started
            self.spent += elapsed
            self._stats.record_check(elapsed)
            self._stats.constraint_checks += 1
            self._ok[token] = known
        return known

    def rejected(self) -> list[int]:
        """The non-EOS tokens checked and rejected so far."""
        return [token for token, ok in self._ok.items() if not ok]

    def state_after(self, token: int) -> State:
        """The constraint state after an accepted token (unchanged for EOS)."""
        if token in self._vocab.eos_ids:
            return self._state
        if token not in self._ok:
            self(token)
        after = self._after.get(token)
        if after is None:
            started = time.perf_counter()
            after = self._after[token] = self._checker.advance_token(self._state, token)
            self._stats.constraint_seconds += time.perf_counter() - started
        return after


def _only(mass: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    kept = np.zeros_like(mass)
    kept[tokens] = mass[tokens]
    return kept


class _Pruner:
    """Removes tokens known to be rejected while AWRS's first loop runs.

    After the first rejection it applies the constraint's cheap hint; in ``"auto"`` mode it
    then applies the token mask once this step's rejections have cost as much as a mask (the
    checker's fixed :attr:`~awrs.constraints.checker.Checker.mask_cost`, in checks; never a
    clock); ``"always"``: at the first call; ``"never"``: not at all.
    """

    __slots__ = ("_accept", "_calls", "_hinted", "_masking", "_price", "_sampler")

    def __init__(self, accept: TokenChecker, sampler: AWRS, *, masking: bool = True) -> None:
        self._accept = accept
        self._sampler = sampler
        self._hinted = False
        self._masking = masking and sampler.masks != "never"
        self._calls = 0  # rejections so far (plus the Poisson estimator's one call after loop 1)
        self._price = 0.0 if sampler.masks == "always" else (
            accept.mask_cost if sampler.mask_cost is None else sampler.mask_cost
        )

    def __call__(self, drawer) -> bool:
        self._calls += 1
        accept = self._accept
        if not self._hinted:
            self._hinted = True
            candidates = accept.candidate_filter()
            if candidates is not None:
                drawer.restrict(candidates, also=accept.eos_ids)
        if self._masking and self._calls >= self._price:
            self._masking = False
            mask = accept.mask_filter()
            if mask is not None:  # None: no mask engine, or none for this text; checks only
                self._sampler.remember_mask(accept)
                if accept.exact_masks:
                    drawer.restrict(mask, exact=True, also=_eos_if_complete(accept))
                else:
                    drawer.restrict(mask, also=accept.eos_ids)
        return self._masking


def _eos_if_complete(accept: TokenChecker) -> np.ndarray | None:
    """The EOS ids an exact mask keeps: all of them if the text is complete, else none."""
    return accept.eos_ids if accept.is_complete() else None


class TokenSampler(ABC):
    """Proposes one token per particle per step, with a log incremental weight."""

    name: str = "sampler"
    #: weights are importance weights (SMC may resample on them and report a likelihood).
    weighted: bool = True
    #: the constraint is checked while generating (otherwise only finished texts are checked).
    checks_during_generation: bool = True

    @abstractmethod
    def propose(
        self, mass: np.ndarray, blocks: np.ndarray | None, accept: TokenChecker, rng: np.random.Generator
    ) -> Draw:
        """Propose a token from ``mass`` (V,) float64; ``blocks`` is ``block_sums(mass)`` if
        the caller has it (computed for all particles at once), else ``None``."""

    def force_eos(
        self, mass: np.ndarray, accept: TokenChecker, eos: np.ndarray, rng: np.random.Generator
    ) -> Draw:
        """End the text at the token limit (weight: :func:`~awrs.sampling.awrs.forced_eos`)."""
        return forced_eos(mass, eos, accept, weighted=self.weighted)


class AWRS(TokenSampler):
    """Adaptive weighted rejection sampling (see :mod:`awrs.sampling.awrs`).

    Args:
        estimator: ``"poisson"`` (default: bounded relative variance), ``"remainder"``,
            ``"two-loop"`` (the paper's) or ``"lcd"`` (no weights: fast locally constrained
            decoding).
        roulette: the remainder estimator's truncation parameter theta (0 disables truncation).
        variance: the Poisson estimator's bound c on its relative variance given loop 1.
        masks: when to use the constraint's token masks: ``"auto"`` (see the module
            docstring), ``"always"`` or ``"never"``. The two-loop estimator prunes only
            before its first loop, so under ``"auto"`` it masks only where a mask is known.
        mask_cost: overrides the constraint's price of a mask, in checks (``0``: mask at the
            first rejection).

    One instance serves one run: under ``"auto"`` it remembers which masks the run has
    computed (by :meth:`~awrs.constraints.checker.Checker.mask_key`) and uses them from then
    on. That memory is per run, not per process, so samples never depend on what other runs
    left in a cache.
    """

    def __init__(
        self, estimator: str = "poisson", *, roulette: float = DEFAULT_ROULETTE,
        variance: float = DEFAULT_POISSON_VARIANCE, masks: str = "auto", mask_cost: float | None = None,
    ):
        if estimator not in ESTIMATORS:
            raise ConfigError(
                f"unknown AWRS estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}"
            )
        if roulette < 0:
            raise ConfigError(f"roulette must be >= 0, got {roulette}")
        if not variance > 0:
            raise ConfigError(f"variance must be > 0, got {variance}")
        if masks not in MASK_MODES:
            raise ConfigError(f"unknown masks mode {masks!r}; choose one of {', '.join(MASK_MODES)}")
        self.estimator = estimator
        self.roulette = roulette
        self.variance = variance
        self.masks = masks
        self.mask_cost = mask_cost
        self.name = "lcd" if estimator == "lcd" else f"awrs[{estimator}]"
        self.weighted = estimator != "lcd"
        options = {"remainder": {"roulette": roulette}, "poisson": {"variance": variance}}
        self._estimate = partial(ESTIMATORS[estimator], **options.get(estimator, {}))
        self._masked_keys: set = set()

    def remember_mask(self, accept: TokenChecker) -> None:
        key = accept.mask_key()
        if key is not None:
            self._masked_keys.add(key)

    def _mask_first(self, accept: TokenChecker) -> bool:
        if not accept.exact_masks or self.masks == "never":
            return False
        if self.masks == "always":
            return True
        key = accept.mask_key()
        return key is not None and key in self._masked_keys

    def propose(self, mass, blocks, accept, rng) -> Draw:
        tried_mask = False
        if self._mask_first(accept):
            mask = accept.mask_filter()
            if mask is not None:
                self.remember_mask(accept)
                drawer = MassDrawer(mass, rng, blocks)
                drawer.restrict(mask, exact=True, also=_eos_if_complete(accept))
                return exact(drawer, accept, weighted=self.weighted)
            tried_mask = True  # no mask for this text (e.g. bytes the vocabulary cannot spell)
        drawer = MassDrawer(mass, rng, blocks)
        prune = _Pruner(accept, self, masking=not tried_mask)
        if self.masks == "always":
            prune(drawer)  # hint and mask before the first draw
        return self._estimate(drawer, accept, prune)


class Masking(TokenSampler):
    """Token masking: checks every token, samples from the masked distribution.

    Its weight is the exact local normaliser Z (``weighted=True``) or 1 (plain locally
    constrained decoding, the distribution every mask engine samples from).
    """

    def __init__(self, *, weighted: bool = True):
        self.weighted = weighted
        self.name = "masking" + ("-weighted" if weighted else "")

    def propose(self, mass, blocks, accept, rng) -> Draw:
        candidates = accept.candidates()
        if candidates is not None:
            mass = _only(mass, candidates)
        allowed = np.fromiter((accept(t) for t in range(len(mass))), dtype=bool, count=len(mass))
        draw = exact(MassDrawer(np.where(allowed, mass, 0.0), rng), accept, weighted=self.weighted)
        return Draw(draw.token, draw.log_weight, int(len(mass) - allowed.sum()))


class Unconstrained(TokenSampler):
    """The model's own distribution (special non-EOS tokens excluded); no checks."""

    name = "unconstrained"
    weighted = False
    checks_during_generation = False

    def propose(self, mass, blocks, accept, rng) -> Draw:
        token = MassDrawer(mass, rng, blocks).draw()
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

    def propose(self, mass, blocks, accept, rng) -> Draw:
        token = MassDrawer(mass, rng, blocks).draw()
        if token == NO_TOKEN or not accept(token):
            return Draw(NO_TOKEN, -math.inf, 1)
        return Draw(token, 0.0, 0)

    def force_eos(self, mass, accept, eos, rng) -> Draw:
        # The sequence must end here to stay within the limit: only a drawn EOS survives.
        token = MassDrawer(mass, rng).draw()
        if token != NO_TOKEN and bool(np.any(eos == token)) and accept(token):
            return Draw(token, 0.0, 0)
        return Draw(NO_TOKEN, -math.inf, 1)
