"""SMC jobs sharing one batched model session: one model call per step for all their rows.

Continuous batching for the server (a job joins between steps, a long prompt is read a chunk
per step), and :func:`run_smc` / :func:`run_smc_many` for a caller that runs jobs to the end.

Not here: what one step does to a job's particles (:mod:`awrs.smc.step`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from ..constraints.base import Constraint
from ..errors import ConfigError
from ..models.base import LanguageModel, RowsNotExtendable
from ..sampling.samplers import TokenSampler
from ..stats import Stats
from .config import SMCConfig
from .particles import Particles
from .step import Critic, Job, Run

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
        self.runs: list[Run] = []  # in the session's row order
        self.waiting: list[Job] = []  # joined, prompt still being evaluated (chunked prefill)
        self.prefill_chunk = prefill_chunk

    @property
    def rows(self) -> int:
        return sum(len(run.active) for run in self.runs)

    @property
    def busy(self) -> bool:
        return bool(self.runs or self.waiting)

    def start(self, jobs: Sequence[Job]) -> list[Run]:
        if self.session is not None:
            raise ConfigError("this driver has already started; join() adds jobs")
        runs = [Run(job, self.model.vocab) for job in jobs]
        clock = time.perf_counter()
        self.session = self.model.open_many([job.prompt_ids for job in jobs],
                                            [job.config.particles for job in jobs])
        _charge_prompt(runs, time.perf_counter() - clock, [job.config.particles for job in jobs])
        self.runs.extend(runs)
        return runs

    def join(self, job: Job) -> Run | None:
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

    def _extend(self, job: Job) -> Run:
        run = Run(job, self.model.vocab)
        clock = time.perf_counter()
        self.session.extend(job.prompt_ids, job.config.particles)
        _charge_prompt([run], time.perf_counter() - clock, [1])
        self.runs.append(run)
        return run

    def _prefill(self) -> Run | None:
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
            run = Run(job, self.model.vocab)
            run.error = err
            run.stop(f"failed: {type(err).__name__}: {err}")
            return run
        if ready:
            self.waiting.pop(0)
        return None

    def step(self) -> list[Run]:
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


def _charge_prompt(runs: Sequence[Run], seconds: float, weights: Sequence[int]) -> None:
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
