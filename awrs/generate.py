"""``awrs.generate``: constrained generation by method name, packaged as a :class:`Result`.

======================  ==================================================================
method                  what it runs
======================  ==================================================================
``awrs-smc``            SMC with AWRS proposals and weights (exact as particles grow)
``masking-smc``         SMC with token masking (same target, checks the whole vocabulary)
``lcd``                 AWRS without weights: locally constrained decoding, few checks
``masking``             token masking without weights: what mask engines sample
``unconstrained``       the model alone; texts are checked afterwards
``rejection``           whole-sequence rejection sampling (exact; may need many attempts)
======================  ==================================================================
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .constraints.base import Constraint
from .errors import ConfigError
from .models.base import LanguageModel, Message
from .result import Result, Sample, decoded_text, from_population, posterior_of
from .sampling.samplers import AWRS, Masking, Rejection, TokenSampler, Unconstrained
from .smc import Critic, Job, Particles, SMCConfig, run_smc, run_smc_many
from .smc.budget import DEFAULT_BUDGET_TWIST, DEFAULT_COMPLETE_POWER, DEFAULT_RESAMPLE_POWER
from .stats import Stats


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    resamples: bool  # uses ess_threshold; otherwise particles are independent


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method("awrs-smc", "SMC with adaptive weighted rejection sampling", True),
        Method("masking-smc", "SMC with token masking (checks every token)", True),
        Method("lcd", "locally constrained decoding by adaptive rejection (no weights)", False),
        Method("masking", "locally constrained decoding by token masking (no weights)", False),
        Method("unconstrained", "the model alone; texts checked afterwards", False),
        Method("rejection", "whole-sequence rejection sampling", False),
    ]
}


def _token_sampler(method: str, estimator: str, masks: str) -> TokenSampler:
    if method == "awrs-smc":
        return AWRS(estimator, masks=masks)
    if method == "masking-smc":
        return Masking(weighted=True)
    if method == "lcd":
        return AWRS("lcd", masks=masks)
    if method == "masking":
        return Masking(weighted=False)
    if method == "unconstrained":
        return Unconstrained()
    return Rejection()


@dataclass
class _Prepared:
    """A validated request: the SMC job to run and what packaging its result needs."""

    method: str
    job: Job
    max_attempts: int | None
    seed: int | None
    timeouts_before: int

    def result(self, model: LanguageModel, population: Particles | None = None) -> Result:
        """The :class:`Result` of the SMC ``population`` (``rejection``: run here, now)."""
        job = self.job
        if self.method == "rejection":
            result = _rejection(model, job.prompt_ids, job.constraint, job.config, job.rng, job.stats,
                                self.max_attempts, job.on_step)
        else:
            result = from_population(self.method, population, model, job.constraint, job.sampler, job.stats)
        result.seed = self.seed
        if job.stopped is not None:
            kept = f"; {len(result.samples)} finished samples kept" if result.samples else ""
            result.message = f"stopped early: {job.stopped}{kept}"
        stats = result.stats
        stats.regex_timeouts = getattr(job.constraint, "timeouts", 0) - self.timeouts_before
        if stats.regex_timeouts and result.message is None:
            result.message = (
                f"{stats.regex_timeouts} regex checks hit the time limit; prefixes were kept and "
                "completions rejected, so samples stay valid but some valid texts may be missing"
            )
        return result


def _prepare(
    model: LanguageModel,
    prompt: str | Sequence[int] | Sequence[Message],
    constraint: Constraint,
    *,
    particles: int = 10,
    max_tokens: int = 64,
    method: str = "awrs-smc",
    seed: int | None = None,
    chat: bool = False,
    system: str | None = None,
    ess_threshold: float = 0.5,
    resampling: str = "systematic",
    budget_twist: str = DEFAULT_BUDGET_TWIST,
    resample_power: float = DEFAULT_RESAMPLE_POWER,
    complete_power: float | None = DEFAULT_COMPLETE_POWER,
    commit_share: float | None = None,
    commit_lag: int | None = None,
    lookahead: bool = True,
    estimator: str = "poisson",
    masks: str = "auto",
    critic: Critic | None = None,
    max_attempts: int | None = None,
    time_limit: float | None = None,
    should_stop: Callable[[], str | None] | None = None,
    on_step: Callable[[Particles], None] | None = None,
) -> _Prepared:
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if not isinstance(constraint, Constraint):
        raise ConfigError(f"constraint must be an awrs Constraint, got {type(constraint).__name__}")
    spec = METHODS[method]
    soft_score = getattr(constraint, "critic", None)
    if (critic is not None or soft_score is not None) and not spec.resamples:
        raise ConfigError(
            f"a critic or soft score needs a weighted SMC method (awrs-smc, masking-smc), not {method}"
        )
    config = SMCConfig(
        particles=particles,
        max_tokens=max_tokens,
        ess_threshold=ess_threshold if spec.resamples else 0.0,
        resampling=resampling,
        budget_twist=budget_twist,
        resample_power=resample_power,
        complete_power=complete_power,
        commit_share=commit_share if spec.resamples else None,
        commit_lag=commit_lag,
        lookahead=lookahead,
    )
    job = Job(
        prompt_ids=model.prompt_ids(prompt, chat=chat, system=system),
        constraint=constraint,
        sampler=_token_sampler(method, estimator, masks),
        config=config,
        rng=np.random.default_rng(seed),
        critic=_combine(critic, soft_score),
        should_stop=_stopper(time_limit, should_stop),
        on_step=on_step,
    )
    return _Prepared(method, job, max_attempts, seed, getattr(constraint, "timeouts", 0))


def generate(
    model: LanguageModel | None,
    prompt: str | Sequence[int] | Sequence[Message],
    constraint: Constraint,
    *,
    particles: int = 10,
    max_tokens: int = 64,
    method: str = "awrs-smc",
    seed: int | None = None,
    chat: bool = False,
    system: str | None = None,
    ess_threshold: float = 0.5,
    resampling: str = "systematic",
    budget_twist: str = DEFAULT_BUDGET_TWIST,
    resample_power: float = DEFAULT_RESAMPLE_POWER,
    complete_power: float | None = DEFAULT_COMPLETE_POWER,
    commit_share: float | None = None,
    commit_lag: int | None = None,
    lookahead: bool = True,
    estimator: str = "poisson",
    masks: str = "auto",
    critic: Critic | None = None,
    max_attempts: int | None = None,
    time_limit: float | None = None,
    should_stop: Callable[[], str | None] | None = None,
    on_step: Callable[[Particles], None] | None = None,
    progress: bool = False,
) -> Result:
    """Generate texts that satisfy ``constraint``.

    Args:
        model: a :class:`~awrs.models.LanguageModel` (``None`` loads the embedded default).
        prompt: text, token ids, or chat messages ``[{"role": ..., "content": ...}]``.
        constraint: what every generated text must satisfy.
        particles: number of particles (samples drawn in parallel, one model batch).
        max_tokens: tokens generated per particle before EOS is forced.
        method: one of :data:`METHODS` (see the module docstring).
        seed: makes the run reproducible.
        chat: wrap a text prompt in the model's chat template (with ``system`` if given).
        ess_threshold: resample when ESS < ess_threshold * particles (SMC methods only).
        resampling: ``"systematic"`` or ``"multinomial"``.
        budget_twist: ``"exact"`` (default), ``"on"`` or ``"off"``: how resampling sees
            ``max_tokens`` (:mod:`awrs.smc.budget`). ``exact`` drops only prefixes that cannot
            finish in the tokens left; ``on`` also favours particles likely to finish in time.
            The target is the same either way; SMC methods only.
        resample_power: resampling weighs particles by their weights to this power (default
            0: lineages stay apart unless they die or cannot finish; 1: plain SMC); the
            target is the same for every value. SMC methods only.
        complete_power: the power for particles whose text is already valid as a whole (it
            could end now), relative to the best of them (default 1: complete texts compete
            by weight, so the population gathers on the better ones and a stream can flow);
            ``None``: ``resample_power`` for every particle. SMC methods only.
        commit_share: commit the next character once the particles that agree on it hold
            this share of the resampling weight (a resampling by prefix, drawn at random: the
            target is the same, see :mod:`awrs.smc.commitment`); lets ``on_step`` see settled text
            early. ``None`` (default): never. SMC methods only.
        commit_lag: with ``commit_share``, also commit the next character whatever the shares
            once every running particle has drawn this many tokens after the one that wrote
            it (``None``: by share only). SMC methods only.
        lookahead: weigh particles, when resampling, by the constraint's look-ahead (for
            :class:`~awrs.Sql`, whether the text names a column its table lacks), and resample
            when it doubts some of them (default True; a twist: the target is the same).
            SMC methods only.
        estimator: AWRS weight estimator: ``"poisson"`` (default; bounded relative variance),
            ``"remainder"`` or ``"two-loop"`` (the paper's).
        masks: when AWRS asks the constraint for a whole-vocabulary token mask: ``"auto"``
            (once a step's rejections have cost as much as a mask), ``"always"`` or ``"never"``
            (see :mod:`awrs.sampling.samplers`).
        critic: ``(text, finished) -> log weight`` extra score for SMC methods.
        max_attempts: for ``rejection``, how many sequences to try (default 50 * particles).
        time_limit: seconds after which unfinished particles are dropped (finished ones are
            kept and reported; the result's message says the run was stopped).
        should_stop: called before every step; a returned reason stops the run the same way
            (for cancellation, e.g. a client that went away).
        on_step: called after every SMC step with the population (read only; see
            :class:`awrs.smc.streaming.SettledText` for the text that can no longer change).
            Under ``rejection`` it sees each round of attempts, and rounds start over.
        progress: show a progress bar on stderr.
    """
    if model is None:
        from .models import load_model

        model = load_model()
    prepared = _prepare(
        model, prompt, constraint, particles=particles, max_tokens=max_tokens, method=method,
        seed=seed, chat=chat, system=system, ess_threshold=ess_threshold, resampling=resampling,
        budget_twist=budget_twist, resample_power=resample_power, complete_power=complete_power,
        commit_share=commit_share, commit_lag=commit_lag, lookahead=lookahead, estimator=estimator,
        masks=masks,
        critic=critic, max_attempts=max_attempts, time_limit=time_limit, should_stop=should_stop, on_step=on_step,
    )
    bar = _progress_bar(prepared.job.config, method) if progress else None
    if bar is not None:
        prepared.job.on_step = _both(lambda _particles: bar.update(1), on_step)
    try:
        return _run([prepared], model)[0]
    finally:
        if bar is not None:
            bar.close()


def _both(first: Callable[[Particles], None], second: Callable[[Particles], None] | None):
    if second is None:
        return first

    def both(particles: Particles) -> None:
        first(particles)
        second(particles)

    return both


def _stopper(
    time_limit: float | None, should_stop: Callable[[], str | None] | None
) -> Callable[[], str | None] | None:
    if time_limit is None:
        return should_stop
    if time_limit <= 0:
        raise ConfigError(f"time_limit must be positive, got {time_limit}")
    deadline = time.monotonic() + time_limit

    def stop() -> str | None:
        if time.monotonic() > deadline:
            return f"time limit of {time_limit:g} s reached"
        return should_stop() if should_stop is not None else None

    return stop


def generate_many(model: LanguageModel, requests: Sequence[dict]) -> list[Result]:
    """Run several generation requests together, sharing one batched model call per step.

    Each request is a dict of :func:`generate`'s arguments (``prompt`` and ``constraint``
    required; ``progress`` not accepted). Results come back in order. Requests may differ in
    prompt, constraint, method and particles; ``rejection`` requests run one after another.
    """
    prepared = []
    for k, request in enumerate(requests):
        try:
            prepared.append(prepare(model, request))
        except ConfigError as err:
            separator = " " if str(err).startswith("has no") else ": "
            raise ConfigError(f"request {k}{separator}{err}") from None
    return _run(prepared, model)


def _run(prepared: Sequence[_Prepared], model: LanguageModel) -> list[Result]:
    results: dict[int, Result] = {}
    smc = [(k, p) for k, p in enumerate(prepared) if p.method != "rejection"]
    if smc:
        populations = run_smc_many(model, [p.job for _, p in smc])
        for (k, p), population in zip(smc, populations):
            results[k] = p.result(model, population)
    for k, p in enumerate(prepared):
        if p.method == "rejection":
            results[k] = p.result(model)
    return [results[k] for k in range(len(prepared))]


def prepare(model: LanguageModel, request: dict) -> _Prepared:
    """A validated request (a dict of :func:`generate`'s arguments, ``prompt`` and
    ``constraint`` included): ``.job`` is its SMC job, for a :class:`~awrs.smc.Driver` that
    runs it among others (continuous batching); ``.result(model, population)`` packages it."""
    request = dict(request)
    try:
        prompt, constraint = request.pop("prompt"), request.pop("constraint")
    except KeyError as err:
        raise ConfigError(f"has no {err.args[0]!r}") from None
    try:
        return _prepare(model, prompt, constraint, **request)
    except TypeError as err:
        raise ConfigError(str(err)) from None


def _combine(*critics: Critic | None) -> Critic | None:
    present = [c for c in critics if c is not None]
    if len(present) <= 1:
        return present[0] if present else None
    return lambda text, finished: sum(c(text, finished) for c in present)


def _rejection(
    model: LanguageModel, prompt_ids: Sequence[int], constraint: Constraint, config: SMCConfig,
    rng: np.random.Generator, stats: Stats, max_attempts: int | None, on_step,
) -> Result:
    budget = max_attempts if max_attempts is not None else 50 * config.particles
    if budget < 1:
        raise ConfigError(f"max_attempts must be at least 1, got {budget}")
    # Attempts are read in particle order, as if made one at a time, and reading stops at the
    # N-th acceptance: the rest of that batch is discarded, so the estimate below is unbiased.
    accepted: list[list[int]] = []
    attempts = 0
    while len(accepted) < config.particles and attempts < budget:
        batch = min(config.particles, budget - attempts)
        round_config = SMCConfig(particles=batch, max_tokens=config.max_tokens, ess_threshold=0.0)
        population = run_smc(
            model, prompt_ids, constraint, Rejection(), round_config, rng, stats=stats, on_step=on_step
        )
        for i in range(batch):
            attempts += 1
            if np.isfinite(population.log_weights[i]):
                accepted.append(population.tokens[i])
                if len(accepted) == config.particles:
                    break
    samples = [
        Sample(decoded_text(model, ids), 1.0 / len(accepted), 0.0, tuple(ids)) for ids in accepted
    ]
    estimate = rejection_estimate(len(accepted), attempts, config.particles)
    message = None
    if not accepted:
        message = (
            f"rejection sampling found no text satisfying the {constraint.describe()} in "
            f"{attempts} attempts (raise max_attempts, or use awrs-smc)"
        )
    return Result(
        method="rejection",
        samples=samples,
        posterior=posterior_of(samples),
        log_marginal_likelihood=math.log(estimate) if estimate > 0 else -math.inf,
        stats=stats,
        eos_token_ids=sorted(model.vocab.eos_ids),
        message=message,
        extra={"attempts": attempts, "accepted": len(accepted)},
    )


def rejection_estimate(accepted: int, attempts: int, wanted: int) -> float:
    """An unbiased estimate of P(constraint) from attempts read one by one until the
    ``wanted``-th acceptance or the budget, whichever came first.

    Given where reading stopped, every order of the earlier outcomes is equally likely, so
    E[first attempt accepted | stop] is unbiased (Rao-Blackwell): stopped by the budget with k
    acceptances in n attempts, k / n; stopped at the N-th acceptance on attempt n, the first
    n - 1 attempts hold N - 1 acceptances: (N - 1) / (n - 1) (1 when n = 1). The plain ratio
    N / n is biased upwards (for N = 1 it is 1 / n, with E[1/n] = -p log p / (1 - p) != p).
    """
    if accepted < wanted:
        return accepted / attempts if attempts else 0.0
    return 1.0 if attempts == 1 else (wanted - 1) / (attempts - 1)


def _progress_bar(config: SMCConfig, method: str):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(
        total=config.max_tokens + 1, desc=f"{method} ({config.particles} particles)",
        unit="step", file=sys.stderr, leave=False,
    )
