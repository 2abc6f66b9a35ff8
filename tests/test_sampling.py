"""The production sampling path (MassDrawer, token samplers) by seeded Monte Carlo.

Tolerances come from standard errors: each check allows 5 standard errors, and the sample
sizes are chosen so that a 2% relative error in a frequency exceeds that bound.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from awrs.constraints import Regex
from awrs.sampling import AWRS, Masking, MassDrawer, Rejection, TokenChecker, Unconstrained
from awrs.sampling.awrs import remainder, two_loop
from awrs.sampling.draw import NO_TOKEN
from awrs.stats import Stats
from awrs.testing import estimator_moments
from awrs.vocab import Vocabulary


def within(estimate: float, truth: float, standard_error: float, sigmas: float = 5.0) -> bool:
    return abs(estimate - truth) <= sigmas * standard_error + 1e-12


def first_two_draws(mass: np.ndarray, rng: np.random.Generator, n: int) -> dict[tuple[int, int], int]:
    """How often each ordered pair of tokens came out first and second, over ``n`` drawers."""
    pairs: dict[tuple[int, int], int] = {}
    for _ in range(n):
        d = MassDrawer(mass, rng)
        a = d.draw()
        d.remove(a)
        b = d.draw()
        pairs[(a, b)] = pairs.get((a, b), 0) + 1
    return pairs


def assert_without_replacement(mass: np.ndarray, pairs: dict[tuple[int, int], int], n: int) -> None:
    for (a, b), count in pairs.items():
        truth = mass[a] * mass[b] / (1 - mass[a])
        assert within(count / n, truth, math.sqrt(truth * (1 - truth) / n)), (a, b)


def test_mass_drawer_order_is_sampling_without_replacement():
    mass = np.array([0.5, 0.3, 0.15, 0.05])
    n = 60_000
    assert_without_replacement(mass, first_two_draws(mass, np.random.default_rng(0), n), n)


@pytest.mark.parametrize("size", [256 * 3, 700])  # whole blocks, and a short last block
def test_mass_drawer_across_blocks_is_sampling_without_replacement(size):
    """Over several blocks of summed mass: the first two draws follow p(a) p(b) / (1 - p(a)),
    with most mass in a few tokens spread over different blocks and a tail of tiny masses."""
    rng = np.random.default_rng(5)
    mass = rng.random(size) * 1e-4
    heavy = [3, 300, size - 1, 520 % size]
    mass[heavy] = [0.3, 0.25, 0.2, 0.15]
    mass /= mass.sum()
    n = 60_000
    pairs = {pair: count for pair, count in first_two_draws(mass, rng, n).items() if set(pair) <= set(heavy)}
    assert len(pairs) == 12
    assert_without_replacement(mass, pairs, n)


def test_mass_drawer_removes_all_of_a_block_exactly():
    """Removing every token of a block leaves exactly the other blocks' mass (no drift from
    subtracting), and draws never land in the emptied block."""
    mass = np.full(1024, 1e-3)
    mass[:256] = np.linspace(1.0, 2.0, 256)
    d = MassDrawer(mass, np.random.default_rng(4))
    for token in range(256):
        d.remove(token)
    assert d.remaining == pytest.approx(768e-3, rel=1e-12)
    assert all(d.draw() >= 256 for _ in range(200))


def test_mass_drawer_exhausts_and_rebuilds():
    mass = np.array([0.7, 0.2, 0.0, 0.1])
    d = MassDrawer(mass, np.random.default_rng(1))
    seen = []
    while (t := d.draw()) != NO_TOKEN:
        seen.append(t)
        d.remove(t)
    assert sorted(seen) == [0, 1, 3]  # zero-mass tokens are never drawn
    assert d.remaining == 0.0


def test_poisson_sample_includes_each_token_independently():
    """MassDrawer realises Poisson sampling with a race: token y is included with probability
    1 - exp(-p(y) * horizon), independently of the others (the enumeration tests assume it)."""
    mass = np.array([0.5, 0.3, 0.15, 0.05])
    rng = np.random.default_rng(11)
    horizon = 2.0
    n = 40_000
    single = np.zeros(4)
    pair = 0
    for _ in range(n):
        arrived = MassDrawer(mass, rng).poisson_sample(horizon)
        single[arrived] += 1
        pair += 0 in arrived and 3 in arrived
    inclusion = 1 - np.exp(-mass * horizon)
    for token in range(4):
        p = inclusion[token]
        assert within(single[token] / n, p, math.sqrt(p * (1 - p) / n)), token
    joint = inclusion[0] * inclusion[3]
    assert within(pair / n, joint, math.sqrt(joint * (1 - joint) / n))


def test_mass_drawer_restrict_keeps_only_given_tokens():
    d = MassDrawer(np.array([0.6, 0.3, 0.1]), np.random.default_rng(2))
    d.remove(1)
    d.restrict(np.array([1, 2]))
    assert d.remaining == pytest.approx(0.1)
    assert {d.draw() for _ in range(50)} == {2}


def test_restricting_by_a_boolean_row_is_the_same_as_by_ids():
    """The two forms of restrict give bit-identical masses, block sums and draws."""
    rng = np.random.default_rng(5)
    mass = rng.dirichlet(np.full(1000, 0.3))
    ids = np.sort(rng.choice(1000, 400, replace=False))
    eos = np.array([999])
    row = np.zeros(1000, dtype=bool)
    row[ids] = True
    drawers = [MassDrawer(mass, np.random.default_rng(9)) for _ in range(2)]
    for d in drawers:
        d.remove(int(ids[0]))
    drawers[0].restrict(np.concatenate([ids, eos]))
    drawers[1].restrict(row, also=eos)
    assert (drawers[0]._mass == drawers[1]._mass).all() and (drawers[0]._blocks == drawers[1]._blocks).all()
    assert [drawers[0].draw() for _ in range(20)] == [drawers[1].draw() for _ in range(20)]


def test_token_masses_into_a_reused_buffer_are_the_same():
    from awrs.sampling.masses import token_masses

    rng = np.random.default_rng(0)
    size = 7_000
    vocab = Vocabulary(tuple(bytes([i % 251 + 1]) * (1 + i // 251) for i in range(size)), frozenset({0}),
                       frozenset({1, 2, 3}))
    logprobs = (rng.standard_normal((6, size)) * 3 - 11).astype(np.float32)
    buffer = np.full((8, size), np.nan)
    alone = token_masses(logprobs, vocab)
    reused = token_masses(logprobs, vocab, out=buffer)
    assert (alone[0] == reused[0]).all() and (alone[1] == reused[1]).all()
    assert reused[0].base is buffer and (reused[0][:, [1, 2, 3]] == 0).all()
    assert token_masses(logprobs, vocab, out=np.empty((2, size)))[0].shape == (6, size)  # too small: a new one


@pytest.mark.parametrize("estimator", [remainder, two_loop])
def test_awrs_frequencies_and_weights_by_monte_carlo(estimator):
    """Would catch a 2% relative error in any token's frequency (5 sigma bound is ~1.3%)."""
    mass = np.array([0.35, 0.25, 0.2, 0.12, 0.08])
    accepted = {1, 3, 4}
    z = sum(mass[a] for a in accepted)
    rng = np.random.default_rng(3)
    n = 100_000
    counts = np.zeros(len(mass))
    weighted = np.zeros(len(mass))
    weighted_sq = np.zeros(len(mass))
    blocks = None
    for _ in range(n):
        draw = estimator(MassDrawer(mass, rng, blocks), accepted.__contains__)
        w = math.exp(draw.log_weight)
        counts[draw.token] += 1
        weighted[draw.token] += w
        weighted_sq[draw.token] += w * w
    for a in range(len(mass)):
        g = mass[a] / z if a in accepted else 0.0
        assert within(counts[a] / n, g, math.sqrt(max(g * (1 - g), 1e-12) / n)), a
        mean = weighted[a] / n
        se = math.sqrt(max(weighted_sq[a] / n - mean**2, 1e-18) / n)
        assert within(mean, mass[a] if a in accepted else 0.0, se), a
    # the exact probabilities these are compared with come from enumeration too
    exact = estimator_moments(estimator, list(mass), accepted)
    assert exact.token_probability[1] == pytest.approx(0.25 / z)


@pytest.mark.parametrize("estimator", [remainder, two_loop])
def test_long_rejection_runs_switch_to_a_precomputed_order_without_bias(estimator):
    """300 invalid tokens carry 99.7% of the mass: loop 1 passes ORDER_AFTER_DRAWS draws.

    One valid token dominates the other, so a second loop that failed to redraw the accepted
    token (continuing the precomputed order instead) would give far too small weights.
    """
    rng = np.random.default_rng(11)
    mass = np.concatenate([np.full(300, 0.997 / 300), [0.0028, 0.0002]])
    accepted = {300, 301}
    n = 3000
    hits, weights = 0, []
    blocks = None
    for _ in range(n):
        draw = estimator(MassDrawer(mass, rng, blocks), accepted.__contains__)
        hits += draw.token == 300
        weights.append(math.exp(draw.log_weight))
    weights = np.array(weights)
    g = 0.0028 / 0.003
    assert within(hits / n, g, math.sqrt(g * (1 - g) / n))
    assert within(weights.mean(), 0.003, weights.std() / math.sqrt(n))


def test_awrs_is_robust_when_almost_all_mass_is_rejected():
    """5,000 tokens, 99.95% of the mass invalid: finite weights, no NaN, unbiased mean."""
    rng = np.random.default_rng(4)
    mass = rng.dirichlet(np.full(5000, 0.05))
    order = np.argsort(-mass)
    accepted = set(order[2500:2600].tolist())  # low-probability tokens only
    z = mass[list(accepted)].sum()
    assert z < 5e-4
    weights = []
    blocks = None
    for _ in range(150):
        draw = remainder(MassDrawer(mass, rng, blocks), accepted.__contains__)
        assert draw.token in accepted and math.isfinite(draw.log_weight)
        weights.append(math.exp(draw.log_weight))
    weights = np.array(weights)
    assert within(weights.mean(), z, weights.std() / math.sqrt(len(weights)))


# --- token samplers on a byte vocabulary --------------------------------------------------------

VOCAB = Vocabulary((b"a", b"b", b"ab", b"c", b"<eos>", b"<pad>"), frozenset({4}), frozenset({5}))
MASS = np.array([0.3, 0.2, 0.1, 0.25, 0.15, 0.0])


def _checker(constraint, text=b""):
    state = constraint.advance(constraint.start(), text)
    return TokenChecker(constraint.compile(VOCAB), state, Stats())


def test_masking_and_awrs_give_the_same_local_distribution():
    constraint = Regex("a+b?")
    rng = np.random.default_rng(5)
    # After "a": 'a', 'b', 'ab' and EOS are valid, 'c' is not.
    valid = [0, 1, 2, 4]
    z = MASS[valid].sum()
    masking = Masking(weighted=True).propose(MASS, None, _checker(constraint, b"a"), rng)
    assert masking.log_weight == pytest.approx(math.log(z))
    counts = {"awrs": np.zeros(6), "masking": np.zeros(6)}
    n = 20_000
    for _ in range(n):
        for name, sampler in (("awrs", AWRS()), ("masking", Masking())):
            draw = sampler.propose(MASS, None, _checker(constraint, b"a"), rng)
            counts[name][draw.token] += 1
    for token in range(6):
        g = MASS[token] / z if token in valid else 0.0
        se = math.sqrt(max(g * (1 - g), 1e-12) / n)
        assert within(counts["awrs"][token] / n, g, se)
        assert within(counts["masking"][token] / n, g, se)


def test_masking_checks_every_token_and_awrs_few():
    constraint = Regex("a+b?")
    rng = np.random.default_rng(6)
    # +1: the EOS-pruning hint; AWRS: loop 1 plus the Poisson estimator's few arrivals
    for sampler, bound in ((Masking(), len(VOCAB) + 1), (AWRS(), 5), (AWRS("two-loop"), 3)):
        checker = _checker(constraint, b"a")
        sampler.propose(MASS, None, checker, rng)
        stats = checker._stats
        assert stats.constraint_checks <= bound
    assert stats.constraint_checks < len(VOCAB)


def test_eos_pruning_after_a_final_match():
    """Once the text is a final match, every non-EOS token is pruned: few checks, exact weight."""
    constraint = Regex("ab")
    rng = np.random.default_rng(7)
    for _ in range(50):
        checker = _checker(constraint, b"ab")
        draw = AWRS().propose(MASS, None, checker, rng)
        assert draw.token == 4
        assert draw.log_weight == pytest.approx(math.log(0.15))
        assert checker._stats.constraint_checks <= 3


def test_forced_eos_weight_and_death():
    constraint = Regex("a+")
    rng = np.random.default_rng(8)
    eos = VOCAB.eos_array
    done = AWRS().force_eos(MASS, _checker(constraint, b"aa"), eos, rng)
    assert done.token == 4 and done.log_weight == pytest.approx(math.log(0.15))
    dead = AWRS().force_eos(MASS, _checker(constraint, b""), eos, rng)
    assert dead.token == NO_TOKEN and dead.log_weight == -math.inf
    assert AWRS("lcd").force_eos(MASS, _checker(constraint, b"a"), eos, rng).log_weight == 0.0


def test_unconstrained_and_rejection_samplers():
    constraint = Regex("c")
    rng = np.random.default_rng(9)
    tokens = {Unconstrained().propose(MASS, None, _checker(constraint), rng).token for _ in range(200)}
    assert tokens == {0, 1, 2, 3, 4}  # never the special <pad>, whatever the constraint says
    outcomes = [Rejection().propose(MASS, None, _checker(constraint), rng) for _ in range(200)]
    assert {o.token for o in outcomes} == {3, NO_TOKEN}
    assert all((o.token == 3) == (o.log_weight == 0.0) for o in outcomes)


def test_exact_masks_give_the_exact_weight_with_one_check():
    constraint = Regex("a+b?")
    assert constraint.engine == "automaton" and constraint.compile(VOCAB).exact_masks
    rng = np.random.default_rng(10)
    valid = [0, 1, 2, 4]
    counts = np.zeros(6)
    n = 20_000
    for _ in range(n):
        checker = _checker(constraint, b"a")
        draw = AWRS(masks="always").propose(MASS, None, checker, rng)
        assert draw.log_weight == pytest.approx(math.log(MASS[valid].sum())) and draw.rejections == 0
        counts[draw.token] += 1
    z = MASS[valid].sum()
    for token in range(6):
        g = MASS[token] / z if token in valid else 0.0
        assert within(counts[token] / n, g, math.sqrt(max(g * (1 - g), 1e-12) / n))


def test_nan_masses_are_a_model_error_not_a_hang():
    """A NaN in the model's output used to make MassDrawer redraw forever."""
    import signal

    import awrs
    from awrs.errors import ModelError

    previous = signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("MassDrawer hung")))
    signal.alarm(20)
    try:
        with pytest.raises(ModelError, match="finite"):
            MassDrawer(np.array([0.5, np.nan, 0.5]), np.random.default_rng(0)).draw()
        model = awrs.TableModel([b"a", b"b", b"<eos>"], lambda context: [0.5, float("nan"), 0.5], eos=2)
        with pytest.raises(ModelError, match="NaN"):
            awrs.generate(model, [], Regex("a+"), particles=2, max_tokens=3, seed=0)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_the_precomputed_order_sorted_chunk_by_chunk_is_the_full_sort():
    """The race's order is sorted lazily, a chunk at a time; served to the end it must be
    exactly the stable sort of all the keys (zero-mass tokens never appear)."""
    mass = np.random.default_rng(8).dirichlet(np.full(3000, 0.2))
    mass[::7] = 0.0
    mass[1:40:3] = mass[1]  # equal masses
    drawer = MassDrawer(mass, np.random.default_rng(5))
    drawer._start_order()
    served = []
    while (token := drawer._next_in_order()) != NO_TOKEN:
        served.append(token)
    live = np.flatnonzero(mass > 0.0)
    keys = np.log(mass[live]) + np.random.default_rng(5).gumbel(size=len(live))
    assert served == live[np.argsort(-keys, kind="stable")].tolist()
