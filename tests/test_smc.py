"""SMC against exact enumeration on tiny models.

* The estimate of P(constraint) is unbiased: its mean over many seeded runs matches the exact
  value within 5 standard errors (and a biased token sampler is caught by the same check).
* The posterior approaches the exact conditional p(x | constraint) as particles grow, while
  locally constrained decoding stays far from it on a model built to show the difference.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import hashed_model, lcd_trap_model

import awrs
from awrs.constraints import Predicate, Regex
from awrs.smc.resampling import multinomial, systematic
from awrs.sampling import AWRS, Masking
from awrs.sampling.awrs import Draw, first_accepted
from awrs.sampling.draw import MassDrawer
from awrs.sampling.samplers import TokenSampler
from awrs.smc import SMCConfig, run_smc
from awrs.stats import Stats
from awrs.testing import exact_lcd, exact_target, normalize, total_variation


def posterior_of(result) -> dict[bytes, float]:
    return {text.encode(): p for text, p in result.posterior.items()}


def mean_and_se(values) -> tuple[float, float]:
    values = np.asarray(values)
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


class OneLoopAWRS(TokenSampler):
    """A biased weight, 1/(n0+1) of the total (paper notes §1.4): used to show tests can fail."""

    def propose(self, mass, blocks, accept, rng):
        drawer = MassDrawer(mass, rng, blocks)
        total = drawer.remaining
        token, n0 = first_accepted(drawer, accept)
        if token < 0:
            return Draw(token, -math.inf, n0)
        return Draw(token, math.log(total / (n0 + 1)), n0)


def smc_likelihoods(model, constraint, sampler, *, runs, particles, max_tokens, ess):
    config = SMCConfig(particles=particles, max_tokens=max_tokens, ess_threshold=ess)
    values = []
    for seed in range(runs):
        population = run_smc(model, [], constraint, sampler, config, np.random.default_rng(seed))
        w = population.log_weights
        values.append(float(np.mean(np.exp(w))))
    return values


CONSTRAINT_CASES = {
    "regex-with-dead-ends": (lambda: hashed_model(seed=1), lambda: Regex(r"(a|bb)+c"), 5),
    "lcd-trap": (lcd_trap_model, lambda: Regex("ab|c"), 4),
    "length-limited": (lambda: hashed_model(seed=2, concentration=0.5), lambda: Regex(r"[ab]*"), 3),
}


@pytest.mark.parametrize("case", CONSTRAINT_CASES)
@pytest.mark.parametrize("sampler", ["poisson", "remainder", "two-loop", "masking", "eager-masks", "always-masks"])
def test_likelihood_estimate_is_unbiased(case, sampler):
    make_model, make_constraint, max_tokens = CONSTRAINT_CASES[case]
    model, constraint = make_model(), make_constraint()
    truth = sum(exact_target(model, [], constraint, max_tokens).values())
    token_sampler = {
        "masking": lambda: Masking(weighted=True),
        "eager-masks": lambda: AWRS(masks="auto", mask_cost=0.0),  # masks at the 1st rejection, then reused
        "always-masks": lambda: AWRS(masks="always"),
    }.get(sampler, lambda: AWRS(sampler, masks="never"))()
    values = smc_likelihoods(
        model, constraint, token_sampler, runs=600, particles=3, max_tokens=max_tokens, ess=0.9
    )
    mean, se = mean_and_se(values)
    assert abs(mean - truth) <= 5 * se + 1e-12, (mean, truth, se)
    assert 0 < truth < 1


def test_a_biased_weight_is_caught_by_the_unbiasedness_check():
    model, constraint = hashed_model(seed=1), Regex(r"(a|bb)+c")
    truth = sum(exact_target(model, [], constraint, 5).values())
    values = smc_likelihoods(model, constraint, OneLoopAWRS(), runs=600, particles=3, max_tokens=5, ess=0.9)
    mean, se = mean_and_se(values)
    assert abs(mean - truth) > 5 * se


def test_posterior_approaches_the_exact_conditional_where_lcd_does_not(trap_model):
    constraint = Regex("ab|c")
    target = normalize(exact_target(trap_model, [], constraint, 4))
    assert target[b"c"] == pytest.approx(0.1 / 0.109)
    distances = []
    for particles in (10, 100, 3000):
        result = awrs.generate(trap_model, [], constraint, particles=particles, max_tokens=4, seed=0)
        distances.append(total_variation(posterior_of(result), target))
    assert distances[-1] < 0.03
    assert distances[-1] < distances[0] or distances[0] < 0.03

    lcd = awrs.generate(trap_model, [], constraint, particles=3000, max_tokens=4, method="lcd", seed=0)
    lcd_exact = normalize(exact_lcd(trap_model, [], constraint, 4))
    assert lcd_exact[b"ab"] == pytest.approx(0.9)
    assert total_variation(posterior_of(lcd), lcd_exact) < 0.03  # LCD samples its own q exactly ...
    assert total_variation(posterior_of(lcd), target) > 0.7  # ... which is far from the target


@pytest.mark.parametrize("method", ["awrs-smc", "masking-smc"])
def test_posterior_matches_exact_target_on_a_random_model(method):
    model, constraint = hashed_model(seed=3), Regex(r"(a|bb)+c?")
    target = normalize(exact_target(model, [], constraint, 4))
    result = awrs.generate(model, [], constraint, particles=4000, max_tokens=4, method=method, seed=1)
    assert total_variation(posterior_of(result), target) < 0.04


def test_rejection_sampling_is_exact_and_estimates_the_probability():
    model, constraint = hashed_model(seed=4), Regex(r"[ab]+")
    exact = exact_target(model, [], constraint, 3)
    result = awrs.generate(
        model, [], constraint, particles=3000, max_tokens=3, method="rejection", seed=2, max_attempts=20000
    )
    assert total_variation(posterior_of(result), normalize(exact)) < 0.04
    attempts = result.extra["attempts"]
    p = sum(exact.values())
    se = math.sqrt(p * (1 - p) / attempts)
    assert abs(math.exp(result.log_marginal_likelihood) - p) < 5 * se


def test_rejection_estimate_is_unbiased_under_its_stopping_rule():
    """Exact: every outcome sequence of the budget, read until the N-th acceptance."""
    from itertools import product

    from awrs.generate import rejection_estimate

    for wanted, budget, p in [(1, 5, 0.3), (2, 6, 0.3), (3, 7, 0.6), (2, 2, 0.9)]:
        mean = 0.0
        for outcomes in product((0, 1), repeat=budget):
            accepted = attempts = 0
            for accept in outcomes:
                attempts += 1
                accepted += accept
                if accepted == wanted:
                    break
            if attempts < budget and any(outcomes[attempts:]):
                continue  # the same stopped run as the all-rejected tail below
            chance = np.prod([p if a else 1 - p for a in outcomes[:attempts]])
            mean += chance * rejection_estimate(accepted, attempts, wanted)
        assert mean == pytest.approx(p), (wanted, budget)


def test_rejection_log_ml_is_unbiased_end_to_end():
    # 'a' first with probability 0.3, then EOS: P(constraint) = 0.3.
    model = awrs.TableModel(["a", "b", "<eos>"], lambda c: [0.3, 0.5, 0.2] if not c else [0, 0, 1], eos=2)
    for particles in (1, 3):
        estimates = [
            math.exp(awrs.generate(model, [], Regex("a"), particles=particles, max_tokens=2,
                                   method="rejection", seed=seed).log_marginal_likelihood)
            for seed in range(600)
        ]
        mean, se = np.mean(estimates), np.std(estimates) / math.sqrt(len(estimates))
        assert abs(mean - 0.3) < 4 * se + 1e-9, (particles, mean, se)


def test_forced_eos_targets_the_length_limited_conditional():
    # 'a' forever with EOS probability 0.1 per step: the limit decides the target.
    model = awrs.TableModel(["a", "<eos>"], lambda c: [0.9, 0.1], eos=1)
    constraint = Regex("a*")
    exact = exact_target(model, [], constraint, 3)
    assert sum(exact.values()) == pytest.approx(0.1 + 0.09 + 0.081 + 0.0729)
    result = awrs.generate(model, [], constraint, particles=3000, max_tokens=3, seed=3)
    assert total_variation(posterior_of(result), normalize(exact)) < 0.03
    assert set(result.posterior) <= {"", "a", "aa", "aaa"}
    values = smc_likelihoods(model, constraint, AWRS(), runs=400, particles=2, max_tokens=3, ess=0.5)
    mean, se = mean_and_se(values)
    assert abs(mean - sum(exact.values())) <= 5 * se + 1e-12


def test_critic_reweights_the_target_with_twisting(trap_model):
    constraint = Regex("ab|c")

    def critic(text: str, finished: bool) -> float:
        if finished:
            return math.log(3.0) if text == "ab" else 0.0
        return math.log(2.0) if text == "a" else 0.0  # a twist: taken back at the next step

    exact = exact_target(trap_model, [], constraint, 4)
    exact[b"ab"] *= 3.0
    result = awrs.generate(trap_model, [], constraint, particles=3000, max_tokens=4, seed=4, critic=critic)
    assert total_variation(posterior_of(result), normalize(exact)) < 0.03


def test_utf8_characters_split_across_tokens():
    # 'é' is two bytes; here it only exists as two half-tokens.
    model = awrs.TableModel([b"\xc3", b"\xa9", b"e", b"<eos>"], lambda c: [0.4, 0.3, 0.2, 0.1], eos=3)
    constraint = Regex("é+")
    exact = normalize(exact_target(model, [], constraint, 6))
    assert set(exact) <= {"é".encode() * k for k in range(1, 4)}
    result = awrs.generate(model, [], constraint, particles=3000, max_tokens=6, seed=5)
    assert total_variation(posterior_of(result), exact) < 0.04
    assert all(constraint.accepts(s.text) for s in result.samples)


def test_the_critic_sees_whole_characters():
    """A prefix that ends inside 'é' reaches the critic without the half character."""
    model = awrs.TableModel([b"\xc3", b"\xa9", b"e", b"<eos>"], lambda c: [0.4, 0.3, 0.2, 0.1], eos=3)
    seen: list[tuple[str, bool]] = []

    def critic(text: str, finished: bool) -> float:
        seen.append((text, finished))
        return 0.0

    awrs.generate(model, [], Regex("é+"), particles=20, max_tokens=6, seed=5, critic=critic)
    assert seen and all("\ufffd" not in text for text, _ in seen)
    assert {text for text, _ in seen} <= {"é" * k for k in range(4)}


def test_predicate_constraint_in_smc():
    model = hashed_model(seed=5)
    no_double = Predicate(lambda s: "aa" not in s and "bb" not in s and "cc" not in s)
    exact = normalize(exact_target(model, [], no_double, 3))
    result = awrs.generate(model, [], no_double, particles=3000, max_tokens=3, seed=6)
    assert total_variation(posterior_of(result), exact) < 0.04


def test_one_batched_model_call_per_step_whatever_the_particle_count():
    model = hashed_model(seed=6)
    stats = Stats()
    run_smc(model, [], Regex(r"[abc]*"), AWRS(), SMCConfig(particles=50, max_tokens=4), np.random.default_rng(0), stats=stats)
    assert stats.model_calls == model.calls == stats.steps
    assert stats.steps <= 5


def test_unsatisfiable_constraint_ends_cleanly_with_no_sample():
    model = hashed_model(seed=7)
    result = awrs.generate(model, [], Regex("z"), particles=5, max_tokens=5, seed=0)
    assert result.samples == [] and result.posterior == {}
    assert result.log_marginal_likelihood == -math.inf
    assert "no token can continue" in result.message
    assert result.stats.dead_ends == 5


def test_truncated_particles_are_reported():
    model = awrs.TableModel(["a", "<eos>"], lambda c: [0.99, 0.01], eos=1)
    result = awrs.generate(model, [], Regex("a{5}"), particles=4, max_tokens=3, seed=0)
    assert result.samples == [] and "max_tokens" in result.message


def test_same_seed_same_result():
    model = hashed_model(seed=8)
    runs = [awrs.generate(model, [], Regex(r"(a|b)+c"), particles=20, max_tokens=5, seed=11) for _ in range(2)]
    assert runs[0].posterior == runs[1].posterior
    assert runs[0].log_marginal_likelihood == runs[1].log_marginal_likelihood


@pytest.mark.parametrize("resample", [systematic, multinomial])
def test_resampling_schemes_draw_in_proportion_to_weights(resample):
    weights = np.array([0.5, 0.25, 0.125, 0.125, 0.0])
    rng = np.random.default_rng(0)
    counts = np.zeros(5)
    rounds = 4000
    for _ in range(rounds):
        counts += np.bincount(resample(weights, rng), minlength=5)
    expected = weights * 5 * rounds
    assert counts[4] == 0
    assert np.all(np.abs(counts - expected) <= 5 * np.sqrt(expected * (1 - weights) + 1e-9) + 1e-9)
    if resample is systematic:  # each count is within one of its expectation, every time
        indices = resample(weights, rng)
        assert np.all(np.abs(np.bincount(indices, minlength=5) - weights * 5) < 1)


def test_jobs_batched_together_each_match_their_own_exact_target():
    """Different prompts, constraints and particle counts in one batch stay independent."""
    from awrs.smc import Job, run_smc_many

    model = hashed_model(seed=14)
    specs = [([0], Regex(r"[ab]+c?"), 3000), ([1, 2], Regex(r"(c|ab)+"), 2000)]
    jobs = [
        Job(prompt, constraint, AWRS(), SMCConfig(particles=n, max_tokens=3), np.random.default_rng(k))
        for k, (prompt, constraint, n) in enumerate(specs)
    ]
    populations = run_smc_many(model, jobs)
    assert model.calls == max(job.stats.steps for job in jobs)  # one call per step for both
    for (prompt, constraint, _), population in zip(specs, populations):
        _assert_matches_exact_target(model, prompt, constraint, population)


def _assert_matches_exact_target(model, prompt, constraint, population) -> None:
    exact = normalize(exact_target(model, prompt, constraint, 3))
    w = np.exp(population.log_weights - population.log_weights.max())
    posterior: dict[bytes, float] = {}
    for tokens, weight in zip(population.tokens, w / w.sum()):
        if weight > 0:
            text = model.vocab.decode(tokens)
            posterior[text] = posterior.get(text, 0.0) + weight
    assert total_variation(posterior, exact) < 0.05


def test_a_job_that_joins_a_running_driver_matches_its_exact_target():
    """Continuous batching: the second job joins after the first has taken a step; both still
    match their own exact targets, and the joining job is answered with its own samples."""
    from awrs.smc import Driver, Job

    model = hashed_model(seed=14)
    specs = [([0], Regex(r"[ab]+c?"), 3000), ([1, 2], Regex(r"(c|ab)+"), 2000)]
    jobs = [
        Job(prompt, constraint, AWRS(), SMCConfig(particles=n, max_tokens=3), np.random.default_rng(k))
        for k, (prompt, constraint, n) in enumerate(specs)
    ]
    driver = Driver(model)
    first = driver.start(jobs[:1])[0]
    assert driver.step() == []
    second = driver.join(jobs[1])
    assert driver.rows == len(first.active) + 2000
    finished = []
    while driver.runs:
        finished += driver.step()
    assert {id(r) for r in finished} == {id(first), id(second)}
    for (prompt, constraint, _), run in zip(specs, (first, second)):
        _assert_matches_exact_target(model, prompt, constraint, run.particles)


def test_a_long_prompt_waits_for_its_prefill_then_joins():
    from awrs.smc import Driver, Job

    model = hashed_model(seed=14)
    jobs = [Job([0], Regex(r"[ab]+c?"), AWRS(), SMCConfig(particles=2000, max_tokens=3), np.random.default_rng(0)),
            Job([1, 2], Regex(r"(c|ab)+"), AWRS(), SMCConfig(particles=2000, max_tokens=3), np.random.default_rng(1))]
    driver = Driver(model, prefill_chunk=1)
    driver.start(jobs[:1])
    driver.step()
    assert driver.join(jobs[1]) is None and driver.waiting == [jobs[1]]  # 2 prompt tokens > 1
    finished = driver.step()  # prefills, then the rows join and take this step
    assert not driver.waiting and [r.job for r in driver.runs + finished][-1] is jobs[1]
    runs = {id(r.job): r for r in driver.runs + finished}
    while driver.busy:
        for run in driver.step():
            runs[id(run.job)] = run
    _assert_matches_exact_target(model, [1, 2], Regex(r"(c|ab)+"), runs[id(jobs[1])].particles)


def test_a_joining_prompt_that_fails_ends_only_its_own_job():
    """A prefill or extend that fails (say, a full KV cache) fails the joining job; the running
    one goes on. A backend whose sessions cannot take rows says so at join time."""
    from awrs.models.base import RowsNotExtendable
    from awrs.smc import Driver, Job

    class FullCache(type(hashed_model(seed=3))):
        def prefill(self, prompt_ids, budget):
            raise awrs.ModelError("the KV cache is full")

    model = hashed_model(seed=3)
    model.__class__ = FullCache
    running = Job([0], Regex(r"[ab]+c?"), AWRS(), SMCConfig(particles=4, max_tokens=3), np.random.default_rng(0))
    joining = Job([1, 2], Regex(r"(c|ab)+"), AWRS(), SMCConfig(particles=4, max_tokens=3), np.random.default_rng(1))
    driver = Driver(model, prefill_chunk=1)
    (first,) = driver.start([running])
    assert driver.join(joining) is None
    finished = driver.step()
    failed = [run for run in finished if run.job is joining]
    assert len(failed) == 1 and isinstance(failed[0].error, awrs.ModelError) and not driver.waiting
    assert first in driver.runs or first in finished  # the running job was stepped, not failed
    assert first.error is None
    while driver.busy:
        driver.step()
    assert np.isfinite(first.particles.log_weights).any()

    driver = Driver(model)
    driver.start([Job([0], Regex("a"), AWRS(), SMCConfig(particles=2, max_tokens=2), np.random.default_rng(0))])
    driver.session.extendable = False
    with pytest.raises(RowsNotExtendable):
        driver.join(Job([0], Regex("a"), AWRS(), SMCConfig(particles=2, max_tokens=2), np.random.default_rng(1)))


def _half_dead_end_model():
    """'a' or 'b' first, each 0.5; after 'a' the model never says 'c', so under ``(a|b)c``
    every particle that took 'a' dead-ends at the next step; after 'b', 'c' is certain."""
    table = {(): [0.5, 0.5, 0.0, 0.0], (0,): [0.6, 0.0, 0.0, 0.4], (1,): [0.0, 0.0, 1.0, 0.0]}
    return awrs.models.TableModel.from_table(["a", "b", "c", "<eos>"], table, eos=3,
                                             default=[0.0, 0.0, 0.0, 1.0])


def test_dead_particles_are_replaced_and_the_population_keeps_its_size():
    model, constraint = _half_dead_end_model(), Regex("(a|b)c")
    n = 16
    config = SMCConfig(particles=n, max_tokens=4, ess_threshold=0.5)
    truth = sum(exact_target(model, [], constraint, 4).values())  # 0.5
    likelihoods = []
    for seed in range(300):
        population = run_smc(model, [], constraint, AWRS(), config, np.random.default_rng(seed))
        texts = {model.vocab.decode([t for t in tokens if t != 3]) for tokens in population.tokens}
        assert np.isfinite(population.log_weights).sum() == n  # before the fix: about n / 2
        assert texts == {b"bc"}
        likelihoods.append(float(np.mean(np.exp(population.log_weights))))
    mean, se = mean_and_se(likelihoods)
    assert abs(mean - truth) < 5 * se


def test_reading_a_prompt_is_charged_as_model_and_prompt_time(monkeypatch):
    """Opening, extending and prefilling read prompts: their time is the job's model time, its
    prompt time and part of its total, whether the prompt is read at once or a chunk per step."""
    import awrs.smc.driver as driver_module
    from awrs.smc import Driver, Job

    now = [0.0]
    monkeypatch.setattr(driver_module.time, "perf_counter", lambda: now[0])  # only prompt reading takes time
    base = type(hashed_model(seed=3))

    class SlowPrompts(base):
        def open_many(self, prompts, rows):
            now[0] += 3.0
            return super().open_many(prompts, rows)

        def prefill(self, prompt_ids, budget):
            now[0] += 5.0
            self.prefills = getattr(self, "prefills", 0) + 1
            return self.prefills == 2  # a chunk per step: ready after two

    model = hashed_model(seed=3)
    model.__class__ = SlowPrompts
    running = Job([0], Regex(r"[ab]+c?"), AWRS(), SMCConfig(particles=4, max_tokens=3), np.random.default_rng(0))
    joining = Job([1, 2], Regex(r"(c|ab)+"), AWRS(), SMCConfig(particles=4, max_tokens=3), np.random.default_rng(1))
    driver = Driver(model, prefill_chunk=1)
    driver.start([running])
    assert driver.join(joining) is None
    while driver.busy:
        driver.step()
    assert running.stats.prompt_seconds == running.stats.model_seconds == running.stats.total_seconds == 3.0
    assert joining.stats.prompt_seconds == joining.stats.model_seconds == joining.stats.total_seconds == 10.0
    assert joining.stats.sampler_seconds == 0.0
