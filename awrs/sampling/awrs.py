r"""Adaptive weighted rejection sampling (AWRS): one token and an unbiased weight.

This module is the one place where incremental weights are computed: the AWRS estimators, the
exact weight of a draw from an exact mask (``exact``, also token masking's), and the weight of
the EOS forced at the token limit (``forced_eos``). Samplers choose and call; they do not compute.

Setting. At one step the model gives every token y a mass p(y) (absolute probabilities; tokens
that may never be proposed have mass 0, so the total may be below 1). ``accept(y)`` says whether
the constraint allows y (for an EOS token: whether the text is complete). Let A be the accepted
set and Z = sum_{y in A} p(y) the *local normaliser*. Locally constrained decoding samples
g(y) = p(y) 1[y in A] / Z; SMC needs Z as the incremental weight. AWRS returns (x, w) with

    x ~ g   and   E[w | x] = Z,

i.e. (x, w) is properly weighted for p(y) 1[y in A]: E[w f(x)] = sum_y f(y) p(y) 1[y in A].

Loop 1 (shared by all estimators) is adaptive rejection sampling: draw tokens without
replacement in proportion to p and stop at the first accepted one, x. Its rejected set R0 has
mass psi0 and n0 elements. Seen as an exponential race, x is independent of R0, so any weight
built from R0 and fresh randomness is independent of which accepted token x is.

Estimators (choose with ``estimator=``):

``"two-loop"`` (Lipkin et al. 2025, the paper's estimator)
    Run a second, fresh loop over the tokens not in R0 (x stays available) up to its first
    accept, counting its n1 rejections; then

        w = (P - psi0) / (n0 + n1 + 1),    P = total mass.

    Unbiased because, by memorylessness, loop 2 continues the race to the second arrival of the
    accepted-token process; exactly one continuation loop is allowed (more are biased).

``"remainder"`` (derived here; awrs's default before the Poisson estimator)
    After loop 1 the mass is split into three known parts: R0 (all rejected), x (accepted,
    mass p(x)) and the untested rest U, of mass m_U = P - psi0 - p(x). Hence, exactly,

        Z = p(x) + Z_U,   Z_U = sum_{y in U ∩ A} p(y).

    Any conditionally unbiased estimate of Z_U given loop 1 gives an unbiased weight, and since
    E[w | loop 1] = Z is the same constant whatever x is, (x, w) is properly weighted. We use
    one draw y from U in proportion to p, kept with probability q (Russian roulette):

        w = p(x) + (m_U / q) * 1[coin < q] * 1[y in A],   q = min(1, m_U / (theta * p(x))).

    E[w | loop 1] = p(x) + Z_U = Z. The accepted token's mass enters exactly, so when one
    valid token dominates, or only one token is valid, the weight is exact (zero variance),
    where the two-loop estimator's relative variance grows like 1/Z. It costs at most one
    constraint check beyond loop 1, and only a fraction q of one when U is light compared
    with p(x); theta bounds the extra relative variance the roulette adds (<= theta * m_U / p(x)).

``"poisson"`` (awrs's default; derived here)
    The remainder's decomposition Z = p(x) + Z_U, with Z_U estimated by *Poisson sampling* of
    U instead of one draw. Continue the exponential race on U from time 0 (a fresh race, by
    memorylessness) up to a horizon theta fixed by loop 1: every token y of U arrives before
    theta independently, with probability pi_y = 1 - exp(-p(y) theta). Check the arrivals and
    weight each accepted one by its inverse inclusion probability (Horvitz-Thompson):

        w = p(x) + sum_{y in U, T_y < theta, y in A} p(y) / pi_y.

    E[w | loop 1] = p(x) + Z_U = Z, so (x, w) is properly weighted. The inclusions are
    independent, so

        Var(w | loop 1) = sum_{y in U ∩ A} p(y)^2 (1 - pi_y) / pi_y  <=  Z_U / theta,

    and expected checks are sum_{y in U} pi_y <= m_U theta. With
    theta = 1 / (c * max(p(x), Zg)), Zg = (p(x) + m_U) / (n0 + 1) a loop-1 guess of Z, the
    relative variance given loop 1 is at most c * max(p(x), Zg) / Z: at most c whenever the
    guess does not exceed Z, and bounded in every case by c * (p(x) + m_U) / Z, a bound with
    no heavy tail of the remainder's kind (a rare weight of m_U). Expected extra checks are
    at most (n0 + 1) / c, and close to none when U is light (m_U << p(x)). c is
    ``variance`` (default 0.25).

``"lcd"``: loop 1 only, weight 1 (not properly weighted; for locally constrained decoding).

On a dead end (loop 1 exhausts every token with positive mass) Z = 0 exactly: the draw returns
``NO_TOKEN`` with weight -inf, never a possibly valid token.

All estimators work in absolute masses, so pruned tokens are carried by the total P, and the
weights are exact in log space down to the smallest positive double.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..errors import ConstraintError
from .draw import NO_TOKEN

DEFAULT_ROULETTE = 0.1
DEFAULT_POISSON_VARIANCE = 0.25  # c: the bound on the relative variance added given loop 1


class Drawer(Protocol):
    """Where token draws come from: :class:`~awrs.sampling.draw.MassDrawer`, or an enumerator."""

    def draw(self) -> int: ...
    def remove(self, token: int) -> None: ...
    def mass(self, token: int) -> float: ...
    def coin(self, probability: float) -> bool: ...
    def restrict(self, tokens, *, exact: bool = False, also=None) -> None: ...
    def poisson_sample(self, horizon: float) -> list[int]:
        """Remove and return the tokens left whose race clocks ring before ``horizon``:
        each independently with probability 1 - exp(-mass * horizon)."""
        ...
    @property
    def remaining(self) -> float: ...
    only_accepted: bool  # every token left is accepted (an exact mask was applied)


Accept = Callable[[int], bool]
Prune = Callable[[Drawer], None]


@dataclass(frozen=True, slots=True)
class Draw:
    """One proposed token, its log weight, and how many candidates were rejected."""

    token: int
    log_weight: float
    rejections: int


def first_accepted(drawer: Drawer, accept: Accept, prune: Prune | None = None) -> tuple[int, int]:
    """Adaptive rejection sampling: the first accepted token in a without-replacement order.

    Rejected tokens are removed from ``drawer``. After a rejection, ``prune(drawer)`` may
    remove further tokens known to be rejected (for example every non-EOS token once the text
    is complete and final, or every token outside a mask); it returns True to be called again
    after the next rejection. Returns (token or NO_TOKEN, rejections).
    """
    rejections = 0
    while True:
        token = drawer.draw()
        if token == NO_TOKEN or accept(token):
            return token, rejections
        drawer.remove(token)
        rejections += 1
        if prune is not None and not prune(drawer):
            prune = None


def _log(x: float) -> float:
    return math.log(x) if x > 0.0 else -math.inf


def lcd(drawer: Drawer, accept: Accept, prune: Prune | None = None) -> Draw:
    """Loop 1 only: an exact sample of g with weight 1 (log 0); -inf on a dead end."""
    token, rejections = first_accepted(drawer, accept, prune)
    return Draw(token, 0.0 if token != NO_TOKEN else -math.inf, rejections)


def two_loop(drawer: Drawer, accept: Accept, prune: Prune | None = None) -> Draw:
    """The paper's estimator: w = (P - psi0) / (n0 + n1 + 1). See the module docstring.

    Its proof counts every rejection of an unpruned race, so pruning happens once, before loop 1.
    """
    if prune is not None:
        prune(drawer)
    token, n0 = first_accepted(drawer, accept)
    if token == NO_TOKEN:
        return Draw(NO_TOKEN, -math.inf, n0)
    log_left = _log(drawer.remaining)  # P - psi0, summed directly (no cancellation)
    _, n1 = first_accepted(drawer, accept)  # x is still available, so loop 2 ends on an accept
    return Draw(token, log_left - math.log(n0 + n1 + 1), n0 + n1)


def remainder(
    drawer: Drawer, accept: Accept, prune: Prune | None = None, *, roulette: float = DEFAULT_ROULETTE
) -> Draw:
    """The remainder estimator: w = p(x) + roulette-weighted check of one untested token.

    Pruning known rejections at any point of loop 1 keeps it exact: x is still the first
    accepted token of the race, and Z = p(x) + Z_U still holds with U the untested tokens.
    """
    token, rejections = first_accepted(drawer, accept, prune)
    if token == NO_TOKEN:
        return Draw(NO_TOKEN, -math.inf, rejections)
    mass_x = drawer.mass(token)
    drawer.remove(token)
    rest = drawer.remaining
    weight = mass_x
    if rest > 0.0:
        keep = 1.0 if roulette <= 0.0 else min(1.0, rest / (roulette * mass_x))
        if drawer.coin(keep):
            other = drawer.draw()
            if other != NO_TOKEN:
                if accept(other):
                    weight += rest / keep
                else:
                    rejections += 1
    return Draw(token, _log(weight), rejections)


def inclusion_probability(mass: float, horizon: float) -> float:
    """P(an Exp(mass) clock rings before ``horizon``), accurate for tiny products."""
    return -math.expm1(-mass * horizon) if horizon != math.inf else (1.0 if mass > 0 else 0.0)


def poisson_horizon(
    mass_x: float, untested: float, rejections: int, *, variance: float = DEFAULT_POISSON_VARIANCE
) -> float:
    """The horizon theta of the Poisson estimator, from loop 1 alone (see the module docstring).

    Expected arrivals are at most untested * theta <= (n0 + 1) / variance.
    """
    if untested <= 0.0:
        return 0.0
    guess = max(mass_x, (mass_x + untested) / (rejections + 1))
    return 1.0 / (variance * guess)


def poisson(
    drawer: Drawer, accept: Accept, prune: Prune | None = None, *, variance: float = DEFAULT_POISSON_VARIANCE
) -> Draw:
    """The Poisson estimator: w = p(x) + Horvitz-Thompson estimate of Z_U. See the module docstring.

    Pruning at any time keeps it exact: pruned tokens are rejections, and an accepted token's
    inclusion depends only on its own clock.
    """
    token, rejections = first_accepted(drawer, accept, prune)
    if token == NO_TOKEN:
        return Draw(NO_TOKEN, -math.inf, rejections)
    mass_x = drawer.mass(token)
    drawer.remove(token)
    horizon = poisson_horizon(mass_x, drawer.remaining, rejections, variance=variance)
    if prune is not None and drawer.remaining * horizon > 1.0:  # worth removing known rejections
        prune(drawer)
        horizon = poisson_horizon(mass_x, drawer.remaining, rejections, variance=variance)
    if drawer.only_accepted:  # an exact mask left only valid tokens: Z is the mass left
        return Draw(token, _log(mass_x + drawer.remaining), rejections)
    weight = mass_x
    if horizon > 0.0:
        for other in drawer.poisson_sample(horizon):
            if accept(other):
                mass = drawer.mass(other)
                weight += mass / inclusion_probability(mass, horizon)
            else:
                rejections += 1
    return Draw(token, _log(weight), rejections)


def exact(drawer: Drawer, accept: Accept, *, weighted: bool = True) -> Draw:
    """A drawer restricted to exactly the accepted set: one draw, one check, w = Z exactly."""
    token = drawer.draw()
    if token == NO_TOKEN:
        return Draw(NO_TOKEN, -math.inf, 0)
    if not accept(token):
        raise ConstraintError(f"the constraint's exact mask allowed token {token} that advance() rejects")
    return Draw(token, _log(drawer.remaining) if weighted else 0.0, 0)


def forced_eos(mass: np.ndarray, eos: np.ndarray, accept: Accept, *, weighted: bool = True) -> Draw:
    """End the text at the token limit: w = p(EOS), so the target becomes p(x | length <= limit)
    (a text that is not complete there dies: no EOS is accepted)."""
    token = int(eos[0])
    if not accept(token):
        return Draw(NO_TOKEN, -math.inf, 1)
    return Draw(token, _log(float(mass[eos].sum())) if weighted else 0.0, 0)


ESTIMATORS: dict[str, Callable[..., Draw]] = {
    "poisson": poisson,
    "remainder": remainder,
    "two-loop": two_loop,
    "lcd": lcd,
}
