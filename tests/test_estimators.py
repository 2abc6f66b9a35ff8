"""AWRS estimators against exact enumeration of their randomness.

Proper weighting means E[w 1{x=a}] = p(a) 1[a accepted] for every token a; the sample alone
must follow g(a) = p(a) 1[a accepted] / Z. Both are checked exactly (every branch of the
estimator's random choices enumerated with its probability), on hand-picked adversarial
cases and on random ones. Tests at the end show the check is sharp: estimators known to be
biased fail it.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest

from awrs.sampling.awrs import (
    Draw,
    first_accepted,
    inclusion_probability,
    lcd,
    poisson,
    poisson_horizon,
    remainder,
    two_loop,
)
from awrs.sampling.draw import NO_TOKEN
from awrs.testing import enumerate_estimator, estimator_moments

PROPER = {
    "poisson": poisson,
    "poisson-tight": partial(poisson, variance=0.02),
    "poisson-loose": partial(poisson, variance=50.0),
    "remainder": remainder,
    "remainder-no-roulette": partial(remainder, roulette=0.0),
    "remainder-heavy-roulette": partial(remainder, roulette=2.0),
    "two-loop": two_loop,
}

# (masses, accepted tokens): masses need not sum to 1 (pruned mass is carried by the total).
CASES = {
    "paper-example": ([0.5, 0.25, 0.25], {1}),
    "two-valid": ([0.5, 0.3, 0.1, 0.05, 0.05], {2, 4}),
    "dominant-invalid": ([0.9, 0.05, 0.05], {1, 2}),
    "dominant-valid": ([0.4, 0.3, 0.2, 0.1], {0}),
    "one-low-probability-valid": ([0.97, 0.01, 0.01, 0.01], {1}),
    "99.9%-rejected": ([0.9989, 0.0004, 0.0003, 0.0002, 0.0002], {3, 4}),
    "tiny-valid-mass": ([1.0 - 3e-9, 1e-9, 1e-9, 1e-9], {2}),
    "pruned-mass": ([0.2, 0.1, 0.3, 0.1], {0, 2}),  # total 0.7
    "all-valid": ([0.25, 0.25, 0.5], {0, 1, 2}),
    "zero-mass-tokens": ([0.0, 0.6, 0.0, 0.4], {3}),
}


def assert_properly_weighted(estimator, mass, accepted, rel=1e-9):
    moments = estimator_moments(estimator, mass, accepted)
    for a, p in enumerate(mass):
        expected = p if a in accepted else 0.0
        got = moments.weighted.get(a, 0.0)
        assert got == pytest.approx(expected, rel=rel, abs=1e-15), (a, got, expected)
    z = sum(mass[a] for a in accepted)
    for a in accepted:
        assert moments.token_probability.get(a, 0.0) == pytest.approx(mass[a] / z, rel=rel)
    return moments


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", PROPER)
def test_properly_weighted_exactly(name, case):
    mass, accepted = CASES[case]
    moments = assert_properly_weighted(PROPER[name], mass, accepted)
    assert moments.mean_weight == pytest.approx(sum(mass[a] for a in accepted), rel=1e-9)
    assert NO_TOKEN not in moments.token_probability


@pytest.mark.parametrize("name", PROPER)
def test_properly_weighted_on_random_distributions(name):
    rng = np.random.default_rng(7)
    for _ in range(60):
        size = int(rng.integers(2, 6))
        mass = rng.dirichlet(np.full(size, float(rng.choice([0.2, 1.0, 5.0]))))
        mass *= rng.choice([1.0, 0.6])  # sometimes with pruned mass
        accepted = {int(a) for a in np.flatnonzero(rng.random(size) < 0.5)} or {int(rng.integers(size))}
        assert_properly_weighted(PROPER[name], list(mass), accepted)


@pytest.mark.parametrize("name", [*PROPER, "lcd"])
def test_dead_end_returns_no_token_and_zero_weight(name):
    estimator = PROPER.get(name, lcd)
    outcomes = list(enumerate_estimator(estimator, [0.5, 0.3, 0.2], set()))
    assert sum(o.probability for o in outcomes) == pytest.approx(1.0)
    for o in outcomes:
        assert o.draw.token == NO_TOKEN and o.draw.log_weight == -math.inf
        assert o.checks == 3  # every token with positive mass was tried


def test_lcd_samples_the_locally_constrained_distribution_with_unit_weight():
    mass, accepted = CASES["two-valid"]
    moments = estimator_moments(lcd, mass, accepted)
    assert moments.token_probability == pytest.approx({2: 0.1 / 0.15, 4: 0.05 / 0.15})
    assert moments.variance == pytest.approx(0.0, abs=1e-15) and moments.mean_weight == 1.0


def test_pruning_known_rejections_mid_loop_keeps_remainder_exact():
    # Token 3 is the only valid one (think: EOS once the text is final); the pruner removes all
    # others after the first rejection, as the EOS pruner does.
    mass = [0.5, 0.3, 0.15, 0.05]

    def prune(drawer):
        drawer.restrict(np.array([3]))

    for estimator in (poisson, remainder, two_loop, lcd):
        moments = estimator_moments(estimator, mass, {3}, prune=prune)
        assert moments.token_probability == pytest.approx({3: 1.0})
        if estimator is not lcd:
            assert moments.weighted[3] == pytest.approx(0.05, rel=1e-12)
        assert moments.expected_checks <= 2.0


@pytest.mark.parametrize("estimator", [remainder, poisson])
def test_exact_when_one_token_is_valid(estimator):
    """The weight includes the accepted token's mass exactly: zero variance here."""
    for case in ("one-low-probability-valid", "paper-example", "tiny-valid-mass"):
        mass, accepted = CASES[case]
        z = sum(mass[a] for a in accepted)
        assert estimator_moments(estimator, mass, accepted).variance / z**2 < 1e-9


def _heavy_untested_case(valid: int = 3, invalid: int = 3, z: float = 1e-3):
    """Most mass on invalid tokens, the valid mass spread: the remainder's bad regime."""
    mass = [(1.0 - z) / invalid] * invalid + [z / valid] * valid
    return mass, set(range(invalid, invalid + valid))


def test_poisson_bounds_the_relative_variance_where_the_remainder_explodes():
    """The hard regime: untested mass m_U >> Z with the valid mass spread. Here (exact
    enumeration, Z = 1e-3) the relative variances are 0.31 (Poisson), 2.0 (remainder; it grows
    like m_U / Z with the vocabulary) and 126 (two-loop)."""
    mass, accepted = _heavy_untested_case()
    z2 = sum(mass[a] for a in accepted) ** 2
    relvar = {name: estimator_moments(e, mass, accepted).variance / z2
              for name, e in (("poisson", poisson), ("remainder", remainder), ("two-loop", two_loop))}
    assert relvar["poisson"] < 0.35
    assert relvar["remainder"] > 1.5 and relvar["two-loop"] > 100


def test_poisson_horizon_follows_loop_one():
    # light untested rest: almost no extra check expected; heavy rest: at most (n0 + 1) / c
    assert poisson_horizon(0.5, 0.0, 0) == 0.0
    assert poisson_horizon(0.9, 1e-6, 0) * 1e-6 < 1e-5
    assert poisson_horizon(1e-3, 0.9, 0) * 0.9 == pytest.approx(4.0, rel=0.01)
    assert poisson_horizon(1e-6, 0.9, 9) * 0.9 == pytest.approx(40.0, rel=0.01)
    assert inclusion_probability(1e-20, 1.0) == pytest.approx(1e-20)


@pytest.mark.parametrize(
    "mass, accepted",
    [
        ([0.5, 0.3, 0.1, 0.05, 0.05], {2, 4}),
        ([0.9, 0.05, 0.05], {1, 2}),
        ([0.4, 0.3, 0.2, 0.1], {0}),
        ([0.97, 0.01, 0.01, 0.01], {1}),
    ],
)
def test_remainder_has_lower_variance_than_the_papers_estimator(mass, accepted):
    """The paper-notes table: two-loop relative variances 1.33, 2.48, 0.51 and 14.6."""
    ours = estimator_moments(partial(remainder, roulette=0.0), mass, accepted)
    paper = estimator_moments(two_loop, mass, accepted)
    z2 = sum(mass[a] for a in accepted) ** 2
    assert ours.variance / z2 < paper.variance / z2
    assert paper.variance / z2 == pytest.approx(
        {0.15: 1.33, 0.1: 2.48, 0.4: 0.51, 0.01: 14.6}[round(math.sqrt(z2), 2)], abs=0.01
    )


def test_roulette_bounds_the_expected_extra_checks():
    # One dominant valid token: the untested rest is light, so the extra check is rarely paid.
    mass, accepted = [0.98, 0.01, 0.01], {0, 1}
    with_roulette = estimator_moments(remainder, mass, accepted)
    without = estimator_moments(partial(remainder, roulette=0.0), mass, accepted)
    assert with_roulette.expected_checks < without.expected_checks - 0.5
    assert with_roulette.variance <= 0.1 * 0.02 * 1.0  # theta * m_U / p(x), relative to Z^2 ~ 1


# --- the checks above are sharp: known-biased estimators fail them -----------------------------


def _without_psi0(drawer, accept):
    """The two-loop formula with the (1 - psi0) factor dropped (biased, paper notes §1.6)."""
    token, n0 = first_accepted(drawer, accept)
    _, n1 = first_accepted(drawer, accept)
    return Draw(token, -math.log(n0 + n1 + 1), n0 + n1)


def _one_loop(drawer, accept):
    """One loop only, 1/(n0 + 1) (biased: 5/9 instead of 1/4 on the paper example)."""
    total = drawer.remaining
    token, n0 = first_accepted(drawer, accept)
    return Draw(token, math.log(total) - math.log(n0 + 1), n0)


def _remainder_without_accepted_mass(drawer, accept):
    """The remainder estimator forgetting p(x): biased low."""
    draw = remainder(drawer, accept, roulette=0.0)
    return Draw(draw.token, math.log(max(math.exp(draw.log_weight) - 1e-3, 1e-300)), draw.rejections)


def _poisson_without_inverse_probability(drawer, accept):
    """The Poisson estimator adding accepted arrivals' plain masses (biased low)."""
    token, n0 = first_accepted(drawer, accept)
    mass_x = drawer.mass(token)
    drawer.remove(token)
    weight = mass_x + sum(drawer.mass(t) for t in drawer.poisson_sample(poisson_horizon(
        mass_x, drawer.remaining, n0)) if accept(t))
    return Draw(token, math.log(weight), n0)


@pytest.mark.parametrize("estimator", [
    _without_psi0, _one_loop, _remainder_without_accepted_mass, _poisson_without_inverse_probability,
])
def test_the_exact_check_rejects_biased_estimators(estimator):
    mass, accepted = CASES["paper-example"] if estimator is not _poisson_without_inverse_probability \
        else CASES["two-valid"]
    with pytest.raises(AssertionError):
        assert_properly_weighted(estimator, mass, accepted)


def test_paper_example_values():
    """Worked numbers from the paper notes: E[1/(n+1)] = 179/432 without psi0; 5/9 one loop."""
    mass, accepted = CASES["paper-example"]
    assert estimator_moments(_without_psi0, mass, accepted).mean_weight == pytest.approx(179 / 432)
    assert estimator_moments(_one_loop, mass, accepted).mean_weight == pytest.approx(5 / 9)
