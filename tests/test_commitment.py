"""Committing text (a resampling by prefix) keeps SMC exact, on tiny models against enumeration.

A committed run's own posterior is conditioned on the prefix it drew, so exactness shows across
runs: the weights stay proper -- the mean of exp(log weight) is unbiased for P(constraint), and
the weight-averaged texts over many runs match the exact posterior -- while a commitment that
forgot to divide by the drawn group's share fails the same checks.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
from conftest import hashed_model

import awrs.smc.commitment as commitment
from awrs.constraints import Regex
from awrs.sampling import AWRS
from awrs.smc import SMCConfig, run_smc
from awrs.smc.particles import Particles
from awrs.stats import Stats
from awrs.testing import exact_target, normalize, total_variation

CASES = {
    "regex-with-dead-ends": (lambda: hashed_model(seed=1), lambda: Regex(r"(a|bb)+c"), 5),
    "length-limited": (lambda: hashed_model(seed=2, concentration=0.5), lambda: Regex(r"[ab]*c"), 3),
}
RUNS = 2000


def weighted_runs(model, constraint, max_tokens, *, share, lag=None, runs=RUNS, particles=3):
    """Per run: the mean of exp(log weight) and the weight each text got; and the commits."""
    config = SMCConfig(particles=particles, max_tokens=max_tokens, ess_threshold=0.9,
                       commit_share=share, commit_lag=lag, complete_power=1.0)
    stats = Stats()
    likelihoods, mass = [], defaultdict(float)
    for seed in range(runs):
        population = run_smc(model, [], constraint, AWRS(masks="never"), config,
                             np.random.default_rng(seed), stats=stats)
        weights = np.exp(population.log_weights)
        likelihoods.append(float(weights.mean()))
        for tokens, w in zip(population.tokens, weights):
            if w > 0:
                mass[model.vocab.decode(tokens)] += float(w) / particles
    return likelihoods, mass, stats.commits


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(("share", "lag"), [(0.6, None), (0.01, None), (1.0, 0)])
def test_committing_keeps_the_likelihood_unbiased_and_the_posterior_exact(case, share, lag):
    make_model, make_constraint, max_tokens = CASES[case]
    model, constraint = make_model(), make_constraint()
    exact = exact_target(model, [], constraint, max_tokens)
    truth = sum(exact.values())
    likelihoods, mass, commits = weighted_runs(model, constraint, max_tokens, share=share, lag=lag)
    assert commits > RUNS // 10  # it did commit, often
    mean, se = np.mean(likelihoods), np.std(likelihoods, ddof=1) / math.sqrt(RUNS)
    assert abs(mean - truth) <= 5 * se + 1e-12, (mean, truth, se)
    assert total_variation(normalize(dict(mass)), normalize(exact)) < 0.06


def test_a_commitment_without_its_weight_is_caught(monkeypatch):
    """The same checks fail when the chosen group keeps its weights (no division by its share)."""
    real_log = math.log
    monkeypatch.setattr(commitment, "math", type("M", (), {"log": staticmethod(lambda x: 0.0 * real_log(x)),
                                                           "inf": math.inf}))
    model, constraint = hashed_model(seed=1), Regex(r"(a|bb)+c")
    exact = exact_target(model, [], constraint, 5)
    likelihoods, mass, commits = weighted_runs(model, constraint, 5, share=0.01)
    assert commits > 0
    mean, se = np.mean(likelihoods), np.std(likelihoods, ddof=1) / math.sqrt(RUNS)
    off = abs(mean - sum(exact.values())) > 5 * se
    assert off or total_variation(normalize(dict(mass)), normalize(exact)) > 0.06


def test_particles_come_to_share_their_text():
    """On a model whose particles mostly agree, committing makes every particle share the text
    before the end; without it they share nothing until then."""
    model, constraint = hashed_model(seed=1), Regex(r"(a|bb)+c")
    shared = {}
    for share in (None, 0.3):
        config = SMCConfig(particles=8, max_tokens=5, ess_threshold=0.5, commit_share=share)
        steps = []

        def on_step(population, steps=steps):
            alive = [model.vocab.decode(t) for t, w in zip(population.tokens, population.log_weights)
                     if np.isfinite(w)]
            running = not population.finished.all()
            steps.append((running, len(commitment._common_prefix(alive)) if alive else 0))

        run_smc(model, [], constraint, AWRS(masks="never"), config, np.random.default_rng(0), on_step=on_step)
        shared[share] = max(n for running, n in steps if running)
    assert shared[0.3] > shared[None]


def test_a_finished_text_is_never_dropped_by_a_commitment(monkeypatch):
    """Once a text has finished, committing stops: on a model that rarely finishes, it may be
    the only valid text the run will find."""
    import awrs.smc.step

    calls = {"with_finished": 0}

    def checked(particles, vocab, share, rng, complete=None, lag=None):
        kept = particles.finished & np.isfinite(particles.log_weights)
        calls["with_finished"] += bool(kept.any())
        committed = commitment.commit_prefix(particles, vocab, share, rng, complete=complete, lag=lag)
        assert np.isfinite(particles.log_weights[kept]).all()
        return committed

    monkeypatch.setattr(awrs.smc.step, "commit_prefix", checked)
    model, constraint = hashed_model(seed=1), Regex(r"(a|bb)+c")
    config = SMCConfig(particles=6, max_tokens=5, ess_threshold=0.5, commit_share=0.01)
    for seed in range(50):
        run_smc(model, [], constraint, AWRS(masks="never"), config, np.random.default_rng(seed))
    assert calls["with_finished"] > 10  # the case arose


def _population(model, texts):
    """Running particles that wrote ``texts`` (one character per token), each of weight 1."""
    ids = {token.decode(): i for i, token in enumerate(model.vocab.tokens)}
    particles = Particles.start(len(texts), None)
    particles.tokens = [[ids[ch] for ch in text] for text in texts]
    return particles


def _survivors(model, particles):
    return [model.vocab.decode(t).decode() for t, w in zip(particles.tokens, particles.log_weights)
            if np.isfinite(w)]


def test_a_lone_particle_is_seldom_the_one_drawn():
    """Groups are drawn with chances proportional to their share cubed: against four
    particles that agree, a lone one is drawn 1 time in 65 (not 1 in 5), and its weight is
    divided by that chance, so the target stays the same."""
    model = hashed_model(seed=1)
    lone, draws = 0, 4000
    for seed in range(draws):
        particles = _population(model, ["ab", "ab", "ab", "ab", "ba"])
        assert commitment.commit_prefix(particles, model.vocab, 0.01, np.random.default_rng(seed)) >= 1
        survivors = _survivors(model, particles)
        chance = 1 / 65 if survivors == ["ba"] else 64 / 65
        lone += survivors == ["ba"]
        assert np.allclose(particles.log_weights[np.isfinite(particles.log_weights)], -math.log(chance))
    assert abs(lone / draws - 1 / 65) < 0.006, lone / draws


def test_a_lag_commits_once_every_particle_drew_that_many_tokens_after_the_character():
    """With ``lag`` a character is committed whatever the shares once every running particle
    has drawn ``lag`` tokens after the one that wrote it, and not before (share 1: never by
    share)."""
    model = hashed_model(seed=1)
    for lag, expected in ((2, True), (3, False), (None, False)):
        particles = _population(model, ["aab", "bab", "bba"])
        committed = commitment.commit_prefix(particles, model.vocab, 1.0, np.random.default_rng(0), lag=lag)
        assert (committed > 0) == expected, (lag, committed)
        assert (len(_survivors(model, particles)) < 3) == expected


def test_committing_keeps_a_text_that_could_end_now_whichever_group_is_drawn():
    """Texts that could end now are about to be valid answers: a draw that could drop all of
    them waits, one that keeps one whichever group it picks goes ahead."""
    model = hashed_model(seed=1)
    texts = ["ab", "ab", "ba", "ba"]
    for could_end, expected in (({0}, False), ({0, 2}, True), ((), True)):
        particles = _population(model, texts)
        committed = commitment.commit_prefix(particles, model.vocab, 0.01, np.random.default_rng(0),
                                             complete=lambda i, could_end=could_end: i in could_end)
        assert (committed > 0) == expected, (could_end, committed)
        assert not could_end or any(np.isfinite(particles.log_weights[i]) for i in could_end)


@pytest.mark.parametrize("lag", [-1, 1.5])
def test_a_lag_that_is_not_a_number_of_tokens_is_refused(lag):
    from awrs.errors import ConfigError

    with pytest.raises(ConfigError, match="commit_lag"):
        SMCConfig(commit_share=1.0, commit_lag=lag)
