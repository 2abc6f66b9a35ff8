"""All (intersection) and Scored (soft scores) against exact enumeration."""

from __future__ import annotations

import math

import pytest
from conftest import hashed_model

import awrs
from awrs.constraints import DEAD, All, Predicate, Regex
from awrs.errors import ConfigError
from awrs.testing import exact_target, normalize, total_variation


def test_all_is_the_intersection():
    both = Regex(r"[ab]+") & Predicate(lambda s: s.count("a") <= 1, name="at most one a")
    assert isinstance(both, All) and len(both.parts) == 2
    assert both.accepts("abbb") and not both.accepts("aab") and not both.accepts("abc")
    assert both.accepts_prefix("bb") and not both.accepts_prefix("aa")
    state = both.advance(both.start(), b"ab")
    assert state is not DEAD and both.advance(state, b"a") is DEAD
    assert "at most one a" in both.describe()
    nested = All(both, Regex(r"b*a?b*"))
    assert len(nested.parts) == 3


def test_all_combines_hints_exactly():
    final = Regex(r"ab") & Regex(r"a.")
    state = final.advance(final.start(), b"ab")
    assert final.next_bytes(state) == frozenset()
    pending = Regex(r".+") & Predicate(lambda s: True)
    state = pending.advance(pending.start(), "é".encode()[:1])
    assert pending.next_bytes(state) == frozenset(range(0x80, 0xC0))


def test_smc_with_an_intersection_matches_exact_enumeration():
    model = hashed_model(seed=12)
    constraint = Regex(r"[abc]+") & Predicate(lambda s: "cc" not in s and not s.startswith("b"))
    exact = normalize(exact_target(model, [], constraint, 4))
    result = awrs.generate(model, [], constraint, particles=10000, max_tokens=4, seed=0)
    posterior = {t.encode(): p for t, p in result.posterior.items()}
    assert total_variation(posterior, exact) < 0.04  # about 0.04 at 4,000 particles, 0.015 at 16,000


def test_soft_score_reweights_the_posterior():
    model = hashed_model(seed=13)
    base = Regex(r"[ab]{1,3}")
    scored = base.scored(lambda text, finished: math.log(4.0) if finished and "b" in text else 0.0)
    exact = exact_target(model, [], base, 3)
    exact = normalize({t: p * (4.0 if b"b" in t else 1.0) for t, p in exact.items()})
    result = awrs.generate(model, [], scored, particles=4000, max_tokens=3, seed=1)
    posterior = {t.encode(): p for t, p in result.posterior.items()}
    assert total_variation(posterior, exact) < 0.04


def test_nested_soft_scores_all_apply():
    """A scored constraint inside ``&``, scored again, keeps every score (they add)."""
    model = hashed_model(seed=13)
    likes_b = Regex(r"[ab]{1,3}").scored(lambda text, finished: math.log(4.0) if finished and "b" in text else 0.0)
    short = (likes_b & Predicate(lambda s: "aa" not in s)).scored(
        lambda text, finished: -math.log(2.0) * len(text) if finished else 0.0
    )
    assert short.critic("ab", True) == pytest.approx(math.log(4.0) - 2 * math.log(2.0))
    exact = exact_target(model, [], short, 3)
    exact = normalize({t: p * (4.0 if b"b" in t else 1.0) / 2.0 ** len(t) for t, p in exact.items()})
    result = awrs.generate(model, [], short, particles=4000, max_tokens=3, seed=1)
    posterior = {t.encode(): p for t, p in result.posterior.items()}
    assert total_variation(posterior, exact) < 0.04


def test_soft_scores_need_a_weighted_method():
    scored = Regex("a").scored(lambda text, finished: 0.0)
    with pytest.raises(ConfigError, match="soft score"):
        awrs.generate(hashed_model(), [], scored, method="lcd")
    with pytest.raises(ConfigError):
        All()
    with pytest.raises(ConfigError):
        All(Regex("a"), "b")
