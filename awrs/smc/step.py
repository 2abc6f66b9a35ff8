"""One step of sequential Monte Carlo over token sequences, for one job's particles.

Target: pi(x) ∝ p_LM(x) 1[x satisfies the constraint] 1[|x| <= max_tokens] (times the critic's
final score, if one is given). Every step:

1. one batched forward pass gives the next-token distribution of every live particle;
2. the token sampler proposes a token per particle with a log incremental weight (for AWRS an
   unbiased estimate of the local normaliser Z); a dead end (-inf) kills the particle;
3. a particle that has produced ``max_tokens`` tokens is given EOS with weight p(EOS | x), which
   keeps the target exact under the length limit;
4. when resampling, the budget twist (:mod:`awrs.smc.budget`) puts in each unfinished particle's
   weight how likely it is to finish within the tokens it has left (a particle that cannot
   finish in them is dropped), the constraint's look-ahead how doubtful its prefix is, and
   ``resample_power`` tempers what resampling sees (the
   weight of the particle's path to that power); all are taken back the next step, so they
   change which particles are kept, not the target; an optional critic twists the weights
   the same way (its prefix score is added, and taken back the next step; its final score is
   applied at EOS);
5. if the effective sample size of the unfinished and dead particles falls below
   ``ess_threshold`` times their number, or one of them is dead or doubted by the look-ahead, they are resampled among
   themselves and each gets their mean weight: dead particles are replaced, so the population keeps its size, while
   texts finished with EOS keep their weights (the likelihood estimate stays unbiased and no
   finished text is lost); the model cache is reordered to match, not recomputed.

The estimate of log P(constraint) is the log mean of the final weights.

Not here: running jobs together on one batched model session (:mod:`awrs.smc.driver`), choosing
samplers by method name and packaging results (:mod:`awrs.generate`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..constraints.base import Constraint, split_utf8
from ..errors import ConfigError
from ..sampling.draw import NO_TOKEN
from ..sampling.masses import token_masses
from ..sampling.samplers import TokenChecker, TokenSampler
from ..stats import Stats
from ..vocab import Vocabulary
from .budget import BudgetTwist, ParticleProgress
from .commitment import commit_prefix
from .config import SMCConfig
from .particles import DIED_AT_DEAD_END, DIED_AT_LIMIT, DIED_OUT_OF_BUDGET, Particles
from .resampling import effective_sample_size, get_resampler, log_mean_exp, normalized

Critic = Callable[[str, bool], float]
"""``critic(text, finished) -> log weight``: a soft score of a prefix or of a finished text."""


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


class Run:
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
        self.lookahead = resampling and job.config.lookahead
        self.doubted = False  # whether the look-ahead doubted some particles, not all, this step
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
        (resample_power - 1) x its path's log weight, plus the budget twist's log psi and the
        constraint's look-ahead; for a
        particle whose text is complete, when ``complete_power`` differs, (complete_power - 1)
        x its path's log weight less (complete_power - resample_power) x the best complete
        path's, so that complete texts compete by weight among themselves."""
        particles, tempering = self.particles, self.tempering
        doubts: list[bool] = []
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
            if self.lookahead:
                doubt = self.job.constraint.lookahead_log_psi(particles.states[i])
                doubts.append(doubt < 0)
                log_psi += doubt
            complete = self.complete_tempering is not None and self.job.constraint.is_complete(particles.states[i])
            particles.log_weights[i] -= before
            twisted.append((i, log_psi, complete))
        # doubting every particle alike changes nothing that resampling could act on
        self.doubted = any(doubts) and not all(doubts)
        self.job.stats.doubts += sum(doubts)
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
                                           complete=lambda i: job.constraint.is_complete(particles.states[i]),
                                           lag=config.commit_lag)

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
            if 0 < ess and (ess < config.ess_threshold * len(moving) or dead[moving].any() or self.doubted):
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
