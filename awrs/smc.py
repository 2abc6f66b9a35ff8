"""Sequential Monte Carlo over token sequences, one batched model call per step.

Target: pi(x) ∝ p_LM(x) 1[x satisfies the constraint] 1[|x| <= max_tokens] (times the critic's
final score, if one is given). Every step:

1. one batched forward pass gives the next-token distribution of every live particle;
2. the token sampler proposes a token per particle with a log incremental weight (for AWRS an
   unbiased estimate of the local normaliser Z); a dead end (-inf) kills the particle;
3. a particle that has produced ``max_tokens`` tokens is given EOS with weight p(EOS | x), which
   keeps the target exact under the length limit;
4. when resampling, the budget twist (:mod:`awrs.budget`) puts in each unfinished particle's
   weight how likely it is to finish within the tokens it has left (a particle that cannot
   finish in them is dropped), and ``resample_power`` tempers what resampling sees (the
   weight of the particle's path to that power); both are taken back the next step, so they
   change which particles are kept, not the target; an optional critic twists the weights
   the same way (its prefix score is added, and taken back the next step; its final score is
   applied at EOS);
5. if the effective sample size of the unfinished and dead particles falls below
   ``ess_threshold`` times their number, or one of them is dead, they are resampled among
   themselves and each gets their mean weight: dead particles are replaced, so the population keeps its size, while
   texts finished with EOS keep their weights (the likelihood estimate stays unbiased and no
   finished text is lost); the model cache is reordered to match, not recomputed.

The estimate of log P(constraint) is the log mean of the final weights.

Not here: choosing samplers by method name and packaging results (see :mod:`awrs.generate`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .commitment import commit_prefix
from .budget import (
    DEFAULT_BUDGET_TWIST, DEFAULT_COMPLETE_POWER, DEFAULT_RESAMPLE_POWER, BudgetTwist, ParticleProgress,
)
from .constraints.base import Constraint, State, split_utf8
from .errors import ConfigError
from .models.base import LanguageModel, RowsNotExtendable
from .resampling import effective_sample_size, get_resampler, log_mean_exp, normalized
from .sampling.draw import NO_TOKEN
from .sampling.masses import token_masses
from .sampling.samplers import TokenChecker, TokenSampler
from .stats import Stats
from .vocab import Vocabulary

Critic = Callable[[str, bool], float]
"""``critic(text, finished) -> log weight``: a soft score of a prefix or of a finished text."""


#: Why a particle died (``Particles.died_of``): it did not; no token could continue its text; its
#: text was incomplete at max_tokens; the budget twist proved it could not finish in time.
ALIVE, DIED_AT_DEAD_END, DIED_AT_LIMIT, DIED_OUT_OF_BUDGET = 0, 1, 2, 3


@dataclass
class Particles:
    """The population, as parallel lists and arrays indexed by particle."""

    tokens: list[list[int]]
    states: list[State]
    log_weights: np.ndarray  # (N,) float64
    finished: np.ndarray  # (N,) bool: ended by EOS or dead
    twists: np.ndarray  # (N,) float64: critic score currently included in log_weights
    truncated: np.ndarray = None  # (N,) bool: ended by an EOS forced at the token limit
    #: (N,) float64: the resampling twist (budget and tempering) currently in log_weights
    resampling_twists: np.ndarray = None
    #: (N,) float64: the sum of the particle's log incremental weights along its whole path
    path_log_weight: np.ndarray = None
    #: (N, 3) int64: what the budget twist follows per particle: the constraint's
    #: min_completion_bytes after the last step, tokens since it changed, tokens since the
    #: constraint last rejected a draw
    progress: np.ndarray = None
    #: (N,) int8: why a dead particle died, one of the ``DIED_*`` codes (``ALIVE`` otherwise)
    died_of: np.ndarray = None
    ancestry: list[np.ndarray] = field(default_factory=list)  # ancestor indices per resampling
    #: the last step, kept only when the job has an ``on_step`` callback: ``{"drawn": {particle:
    #: (token, rejected token ids)}, "parents": ancestor of each particle, or None}``; drawn
    #: particles are numbered as before that step's resampling
    last_step: dict | None = None

    @classmethod
    def start(cls, n: int, state: State) -> Particles:
        return cls(
            tokens=[[] for _ in range(n)],
            states=[state] * n,
            log_weights=np.zeros(n),
            finished=np.zeros(n, dtype=bool),
            twists=np.zeros(n),
            truncated=np.zeros(n, dtype=bool),
            resampling_twists=np.zeros(n),
            path_log_weight=np.zeros(n),
            progress=np.tile(np.array([-1, 0, 0], dtype=np.int64), (n, 1)),
            died_of=np.full(n, ALIVE, dtype=np.int8),
        )

    def __len__(self) -> int:
        return len(self.tokens)

    def select(self, indices: np.ndarray) -> None:
        self.tokens = [list(self.tokens[i]) for i in indices]
        self.states = [self.states[i] for i in indices]
        self.log_weights = self.log_weights[indices]
        self.finished = self.finished[indices]
        self.twists = self.twists[indices]
        self.truncated = self.truncated[indices]
        self.resampling_twists = self.resampling_twists[indices]
        self.path_log_weight = self.path_log_weight[indices]
        self.progress = self.progress[indices]
        self.died_of = self.died_of[indices]
        self.ancestry.append(np.asarray(indices))


@dataclass(frozen=True)
class SMCConfig:
    """How SMC runs. ``ess_threshold=0`` is importance sampling (never resample)."""

    particles: int = 10
    max_tokens: int = 64
    ess_threshold: float = 0.5
    resampling: str = "systematic"
    #: ``on``, ``exact`` or ``off``: the budget twist (:mod:`awrs.budget`), used when resampling
    budget_twist: str = DEFAULT_BUDGET_TWIST
    #: resampling weighs each particle by its path weight to this power (times the budget
    #: twist); 1 is plain SMC, 0 keeps lineages apart unless they die or cannot finish. The
    #: difference is a twist, taken back at the end: the target is the same for every value.
    resample_power: float = DEFAULT_RESAMPLE_POWER
    #: particles whose text is already valid as a whole (it could end now) are weighed among
    #: themselves by their path weight to this power, relative to the best of them; the others
    #: keep ``resample_power``. A twist like the other, taken back at the end. ``None``: the
    #: same power for every particle.
    complete_power: float | None = DEFAULT_COMPLETE_POWER
    #: commit the next character of the text once the particles that agree on it hold this
    #: share of the resampling weight (:mod:`awrs.commitment`: a resampling by prefix, drawn
    #: at random, so the target is the same); ``None``: never. What lets a stream flow.
    commit_share: float | None = None

    def __post_init__(self) -> None:
        if self.particles < 1:
            raise ConfigError(f"particles must be at least 1, got {self.particles}")
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if not 0.0 <= self.ess_threshold <= 1.0:
            raise ConfigError(f"ess_threshold must be in [0, 1], got {self.ess_threshold}")
        get_resampler(self.resampling)
        BudgetTwist.named(self.budget_twist)
        if not 0.0 <= self.resample_power <= 1.0:
            raise ConfigError(f"resample_power must be in [0, 1], got {self.resample_power}")
        if self.commit_share is not None and not 0.0 < self.commit_share <= 1.0:
            raise ConfigError(f"commit_share must be in (0, 1] or None, got {self.commit_share}")
        if self.complete_power is not None and not 0.0 <= self.complete_power <= 1.0:
            raise ConfigError(f"complete_power must be in [0, 1] or None, got {self.complete_power}")


def _checked_score(critic: Critic, text: str, finished: bool) -> float:
    score = float(critic(text, finished))
    if math.isnan(score) or score == math.inf:
        raise ConfigError(f"the critic returned {score} for {text[:60]!r}; it must return a log weight < inf")
    return score


@dataclass
class Job:
    """One SMC problem: a prompt, a constraint, how to sample, and where to count."""

    prompt_ids: Sequence[int]
    constraint: Constraint
    sampler: TokenSampler
    config: SMCConfig
    rng: np.random.Generator
    stats: Stats = field(default_factory=Stats)
    critic: Critic | None = None
    on_step: Callable[[Particles], None] | None = None
    #: called before every step; a returned reason (a time limit, a client gone) stops the job:
    #: its unfinished particles are dropped and the reason is recorded in ``stopped``.
    should_stop: Callable[[], str | None] | None = None
    stopped: str | None = None


class _Run:
    """The population of one job and its step logic; the driver assigns its session rows."""

    def __init__(self, job: Job, vocab: Vocabulary) -> None:
        self.job = job
        self.vocab = vocab
        self.checker = job.constraint.compile(vocab)
        self.particles = Particles.start(job.config.particles, job.constraint.start())
        self.active = np.arange(job.config.particles)  # particle behind each of this job's rows
        self.parents = np.zeros(0, dtype=np.int64)  # for the next model call, in local rows
        self.next_tokens = np.zeros(0, dtype=np.int64)
        self.resample = get_resampler(job.config.resampling)
        self._masses: np.ndarray | None = None  # reused by every step (see token_masses)
        self.twisting = job.critic is not None and job.config.ess_threshold > 0
        resampling = job.config.ess_threshold > 0
        if not job.sampler.checks_during_generation:  # states stay at the start: nothing to see
            resampling = False
        self.budget = BudgetTwist.named(job.config.budget_twist) if resampling else None
        self.tempering = job.config.resample_power - 1.0 if resampling else 0.0
        complete_power = job.config.complete_power
        self.complete_tempering = (
            complete_power - 1.0 if resampling and complete_power is not None
            and complete_power != job.config.resample_power else None
        )
        self.error: BaseException | None = None  # what ended the job, if it failed
        job.stats.particles += job.config.particles

    def stop(self, reason: str) -> None:
        """End the job now: unfinished particles get weight zero."""
        particles = self.particles
        particles.log_weights[self.active] = -math.inf
        particles.finished[self.active] = True
        self.job.stats.stopped_particles += len(self.active)
        self.job.stopped = reason
        self.active = np.zeros(0, dtype=np.int64)
        self.parents = self.next_tokens = np.zeros(0, dtype=np.int64)

    def _apply_twists(self) -> None:
        """Put each stepped particle's resampling twist in its weight, in place of the last one:
        (resample_power - 1) x its path's log weight, plus the budget twist's log psi; for a
        particle whose text is complete, when ``complete_power`` differs, (complete_power - 1)
        x its path's log weight less (complete_power - resample_power) x the best complete
        path's, so that complete texts compete by weight among themselves."""
        particles, tempering = self.particles, self.tempering
        twisted: list[tuple[int, float, bool]] = []
        for i in self.active:
            before = particles.resampling_twists[i]
            particles.resampling_twists[i] = 0.0
            if particles.log_weights[i] == -math.inf:
                continue
            if particles.finished[i]:  # ended with EOS: its weight is the target's again
                particles.log_weights[i] -= before
                continue
            log_psi = self._budget_log_psi(i) if self.budget is not None else 0.0
            if log_psi == -math.inf:  # cannot finish in the tokens left: the target has no mass here
                particles.log_weights[i] = -math.inf
                particles.finished[i] = True
                particles.died_of[i] = DIED_OUT_OF_BUDGET
                self.job.stats.budget_kills += 1
                continue
            complete = self.complete_tempering is not None and self.job.constraint.is_complete(particles.states[i])
            particles.log_weights[i] -= before
            twisted.append((i, log_psi, complete))
        best_complete = max((particles.path_log_weight[i] for i, _, complete in twisted if complete), default=0.0)
        for i, log_psi, complete in twisted:
            path = particles.path_log_weight[i]
            if complete:
                log_psi += self.complete_tempering * path - (self.complete_tempering - tempering) * best_complete
            else:
                log_psi += tempering * path
            particles.log_weights[i] += log_psi
            particles.resampling_twists[i] = log_psi

    def _budget_log_psi(self, i: int) -> float:
        """The budget twist of particle ``i``, after updating what it follows of its progress."""
        particles, limit = self.particles, self.job.config.max_tokens
        progress = particles.progress[i]
        needed = self.job.constraint.min_completion_bytes(particles.states[i])
        progress[1] = progress[1] + 1 if needed == progress[0] else 0
        progress[0] = needed
        written = len(particles.tokens[i])
        return self.budget.log_psi(
            ParticleProgress(needed, int(progress[1]), int(progress[2]), written, limit - written),
            self.vocab.max_token_bytes,
        )

    def step(self, logprobs: np.ndarray) -> None:
        """Extend every live particle by one token (rows of ``logprobs`` follow ``active``)."""
        job, particles, vocab, stats = self.job, self.particles, self.vocab, self.job.stats
        config, sampler, rng = job.config, job.sampler, job.rng
        eos = vocab.eos_array
        if self._masses is None or self._masses.shape[0] < len(logprobs):
            self._masses = np.empty((job.config.particles, len(vocab)), dtype=np.float64)
        mass, blocks = token_masses(logprobs, vocab, out=self._masses)
        drawn: dict[int, tuple[int, list[int]]] | None = {} if job.on_step is not None else None
        for row, i in enumerate(self.active):
            checker = TokenChecker(self.checker, particles.states[i], stats)
            at_limit = len(particles.tokens[i]) >= config.max_tokens
            if at_limit:
                draw = sampler.force_eos(mass[row], checker, eos, rng)
            else:
                draw = sampler.propose(mass[row], blocks[row], checker, rng)
            stats.rejections += draw.rejections
            if drawn is not None:
                drawn[int(i)] = (int(draw.token), checker.rejected())
            if draw.token == NO_TOKEN or draw.log_weight == -math.inf:
                particles.log_weights[i] = -math.inf
                particles.finished[i] = True
                if at_limit:
                    stats.truncated += 1
                    particles.died_of[i] = DIED_AT_LIMIT
                else:
                    stats.dead_ends += 1
                    particles.died_of[i] = DIED_AT_DEAD_END
                continue
            particles.log_weights[i] += draw.log_weight
            particles.path_log_weight[i] += draw.log_weight
            particles.tokens[i].append(draw.token)
            if draw.rejections:
                particles.progress[i, 2] = 0
            else:
                particles.progress[i, 2] += 1
            if draw.token in vocab.eos_ids:
                particles.finished[i] = True
                particles.truncated[i] = at_limit
            elif sampler.checks_during_generation:
                particles.states[i] = checker.state_after(draw.token)
        stats.tokens += len(self.active)
        stats.steps += 1

        if self.budget is not None or self.tempering or self.complete_tempering is not None:
            self._apply_twists()
        if job.critic is not None:
            _apply_critic(job.critic, particles, self.active, vocab, self.twisting)

        if config.commit_share is not None:
            stats.commits += commit_prefix(particles, vocab, config.commit_share, rng,
                                           complete=lambda i: job.constraint.is_complete(particles.states[i]))

        n = len(particles)
        row_of = np.full(n, -1)
        row_of[self.active] = np.arange(len(self.active))
        ancestors = np.arange(n)
        # Resampled together: unfinished particles and dead ones (weight zero), so that the dead
        # are replaced by copies of the living and the population keeps its size. Texts that
        # ended with EOS keep their weights and are never resampled away.
        dead = particles.finished & (particles.log_weights == -math.inf)
        moving = np.flatnonzero(~particles.finished | dead)
        resampled = False
        if config.ess_threshold > 0 and not particles.finished[moving].all():
            # Each resampled particle gets the group's mean weight, finished ones keep theirs:
            # the total weight of both groups is unchanged in expectation, so this is a valid
            # resampling, and the likelihood estimate stays unbiased.
            weights = particles.log_weights[moving]
            ess = effective_sample_size(weights)
            if 0 < ess and (ess < config.ess_threshold * len(moving) or dead[moving].any()):
                ancestors[moving] = moving[self.resample(normalized(weights), rng)]
                mean = log_mean_exp(weights)
                particles.select(ancestors)
                particles.log_weights[moving] = mean  # twists stay: each is taken back next step
                stats.resamples += 1
                resampled = True
        if job.on_step is not None:
            particles.last_step = {"drawn": drawn, "parents": ancestors.tolist() if resampled else None}
            job.on_step(particles)

        live = np.flatnonzero(~particles.finished)
        self.parents = row_of[ancestors[live]]
        self.next_tokens = np.array([particles.tokens[i][-1] for i in live], dtype=np.int64)
        self.active = live


PREFILL_CHUNK = 64  # prompt tokens evaluated per step for a request joining a running batch


class Driver:
    """SMC jobs sharing one batched session: one model call per step for all their rows.

    :meth:`start` opens the session for the first jobs; :meth:`join` adds a job between steps
    (its prompt is evaluated and its rows are appended to the session: continuous batching);
    :meth:`step` runs one step of every job and returns the jobs' runs that finished (a job
    whose constraint or critic raised ends with the exception in ``run.error``). Each
    job's statistics get its own constraint and sampler time, and a share of the rest of every
    step (the model call above all) in proportion to its rows.
    """

    def __init__(self, model: LanguageModel, *, prefill_chunk: int = PREFILL_CHUNK) -> None:
        self.model = model
        self.session = None
        self.runs: list[_Run] = []  # in the session's row order
        self.waiting: list[Job] = []  # joined, prompt still being evaluated (chunked prefill)
        self.prefill_chunk = prefill_chunk

    @property
    def rows(self) -> int:
        return sum(len(run.active) for run in self.runs)

    @property
    def busy(self) -> bool:
        return bool(self.runs or self.waiting)

    def start(self, jobs: Sequence[Job]) -> list[_Run]:
        if self.session is not None:
            raise ConfigError("this driver has already started; join() adds jobs")
        runs = [_Run(job, self.model.vocab) for job in jobs]
        clock = time.perf_counter()
        self.session = self.model.open_many([job.prompt_ids for job in jobs],
                                            [job.config.particles for job in jobs])
        _charge_prompt(runs, time.perf_counter() - clock, [job.config.particles for job in jobs])
        self.runs.extend(runs)
        return runs

    def join(self, job: Job) -> _Run | None:
        """Add ``job``; its rows take part from the next step. A prompt longer than
        ``prefill_chunk`` tokens joining a running session is evaluated a chunk per step first
        (None is returned; the job's run appears in :attr:`runs` when its rows join)."""
        if self.session is None:
            return self.start([job])[0]
        if not self.session.extendable:
            raise RowsNotExtendable(f"{self.model.name} cannot add rows to a running session")
        if len(job.prompt_ids) > self.prefill_chunk or self.waiting:
            self.waiting.append(job)
            return None
        return self._extend(job)

    def _extend(self, job: Job) -> _Run:
        run = _Run(job, self.model.vocab)
        clock = time.perf_counter()
        self.session.extend(job.prompt_ids, job.config.particles)
        _charge_prompt([run], time.perf_counter() - clock, [1])
        self.runs.append(run)
        return run

    def _prefill(self) -> _Run | None:
        """One chunk of the oldest waiting prompt; its rows join once it is evaluated. If
        evaluating or adding it fails, only that job ends: its run, with ``error``, is returned."""
        job = self.waiting[0]
        clock = time.perf_counter()
        try:
            ready = self.model.prefill(job.prompt_ids, self.prefill_chunk)
            # counted as a model call once, when its rows join (as a prompt read at once is)
            _charge_prompt_job(job, time.perf_counter() - clock, call=False)
            if ready:
                self._extend(job)
        except Exception as err:  # e.g. a full KV cache: the running rows are untouched
            self.waiting.pop(0)
            run = _Run(job, self.model.vocab)
            run.error = err
            run.stop(f"failed: {type(err).__name__}: {err}")
            return run
        if ready:
            self.waiting.pop(0)
        return None

    def step(self) -> list[_Run]:
        """One step of every job; returns the runs that finished (every particle done)."""
        failed = self._prefill() if self.waiting else None
        if not self.runs:
            return [failed] if failed else []
        started = time.perf_counter()
        logprobs = self.session.logprobs()
        model_seconds = time.perf_counter() - started
        offset = 0
        parents, tokens, owners, done, rows_before, own = [], [], [], [], [], []
        for run in self.runs:
            rows = len(run.active)
            clock = time.perf_counter()
            reason = run.job.should_stop() if run.job.should_stop is not None else None
            if reason is not None:
                run.stop(reason)
            else:
                try:
                    run.step(logprobs[offset : offset + rows])
                except Exception as err:  # its constraint or critic failed: only this job ends
                    run.error = err
                    run.stop(f"failed: {type(err).__name__}: {err}")
            own.append(time.perf_counter() - clock)
            rows_before.append(rows)
            if len(run.active):
                parents.append(run.parents + offset)
                tokens.append(run.next_tokens)
                owners.append(run)
            else:
                done.append(run)
            offset += rows
        if owners:
            clock = time.perf_counter()
            self.session.step(np.concatenate(parents), np.concatenate(tokens))
            model_seconds += time.perf_counter() - clock
        shared = max(time.perf_counter() - started - sum(own), 0.0)
        total = sum(rows_before) or 1
        for run, rows, mine in zip(self.runs, rows_before, own):
            run.job.stats.model_seconds += model_seconds * rows / total
            run.job.stats.total_seconds += mine + shared * rows / total
            if len(run.active):
                run.job.stats.model_calls += 1
        self.runs = owners
        return done + ([failed] if failed else [])

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


def _charge_prompt(runs: Sequence[_Run], seconds: float, weights: Sequence[int]) -> None:
    """Share ``seconds`` of one prompt-reading model call among ``runs`` by ``weights``."""
    total = sum(weights) or 1
    for run, weight in zip(runs, weights):
        _charge_prompt_job(run.job, seconds * weight / total, call=True)


def _charge_prompt_job(job: Job, seconds: float, *, call: bool) -> None:
    """``seconds`` of model time spent reading ``job``'s prompt."""
    job.stats.total_seconds += seconds
    job.stats.model_seconds += seconds
    job.stats.prompt_seconds += seconds
    if call:
        job.stats.model_calls += 1


def run_smc_many(model: LanguageModel, jobs: Sequence[Job]) -> list[Particles]:
    """Run several SMC jobs together: one batched model call per step for all their particles.

    Jobs may have different prompts, constraints, samplers and particle counts (the model
    must support :meth:`~awrs.models.base.LanguageModel.open_many` for different prompts).
    """
    driver = Driver(model)
    runs = driver.start(jobs)
    try:
        while driver.busy:
            for run in driver.step():
                if run.error is not None:
                    raise run.error
    finally:
        driver.close()
    return [run.particles for run in runs]


def run_smc(
    model: LanguageModel,
    prompt_ids: Sequence[int],
    constraint: Constraint,
    sampler: TokenSampler,
    config: SMCConfig,
    rng: np.random.Generator,
    *,
    stats: Stats | None = None,
    critic: Critic | None = None,
    on_step: Callable[[Particles], None] | None = None,
) -> Particles:
    """Run SMC to the end (every particle finished or dead) and return the population."""
    job = Job(prompt_ids, constraint, sampler, config, rng, stats if stats is not None else Stats(),
              critic, on_step)
    return run_smc_many(model, [job])[0]


def _apply_critic(
    critic: Critic, particles: Particles, stepped: np.ndarray, vocab: Vocabulary, twisting: bool
) -> None:
    """Add the critic's score to particles that moved this step (see the module docstring)."""
    for i in stepped:
        if particles.log_weights[i] == -math.inf:
            continue
        done = bool(particles.finished[i])
        if not done and not twisting:
            continue
        data = vocab.decode(particles.tokens[i])
        # a prefix may end inside a UTF-8 character: the critic sees the characters before it
        parts = None if done else split_utf8(data)
        text = parts[0] if parts is not None else data.decode("utf-8", errors="replace")
        score = _checked_score(critic, text, done)
        particles.log_weights[i] += score - particles.twists[i]
        particles.twists[i] = 0.0 if done else score
