"""Run statistics: counts and where the seconds went (model, constraint, sampler)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

CHECK_SAMPLE = 100_000  # advance() durations kept for percentiles (the first ones of a run)


@dataclass
class Stats:
    """Counters for one generation run.

    ``tokens`` counts particle-tokens (one per particle per step, EOS included);
    ``constraint_checks`` counts calls of ``advance``/``is_complete`` on a candidate;
    ``sampler_seconds`` is everything that is neither the model nor the constraint
    (drawing, weights, resampling, bookkeeping); ``prompt_seconds`` is the part of
    ``model_seconds`` spent reading the prompt.
    """

    particles: int = 0
    steps: int = 0
    tokens: int = 0
    model_calls: int = 0
    constraint_checks: int = 0
    rejections: int = 0
    resamples: int = 0
    dead_ends: int = 0  # particles killed because no token could continue the text
    truncated: int = 0  # particles killed at max_tokens because the text was not complete
    budget_kills: int = 0  # particles dropped because they could not finish in the tokens left
    doubts: int = 0  # particle-steps whose prefix the constraint's look-ahead doubted
    commits: int = 0  # characters committed by drawing a group of texts (awrs.smc.commitment)
    stopped_particles: int = 0  # particles dropped unfinished by a time limit or cancellation
    regex_timeouts: int = 0
    masks: int = 0  # whole-vocabulary token masks computed (their time is in constraint_seconds)
    mask_seconds: float = 0.0
    model_seconds: float = 0.0
    prompt_seconds: float = 0.0  # included in model_seconds
    constraint_seconds: float = 0.0
    total_seconds: float = 0.0
    advance_seconds: list[float] = field(default_factory=list, repr=False)  # per token check

    def record_check(self, seconds: float) -> None:
        """Count one token check (``advance``) that took ``seconds``."""
        self.constraint_seconds += seconds
        if len(self.advance_seconds) < CHECK_SAMPLE:
            self.advance_seconds.append(seconds)

    def advance_micros(self, quantile: float) -> float | None:
        """A percentile of the time one token check took, in microseconds (None if none)."""
        if not self.advance_seconds:
            return None
        return float(np.quantile(np.asarray(self.advance_seconds), quantile) * 1e6)

    @property
    def sampler_seconds(self) -> float:
        return max(self.total_seconds - self.model_seconds - self.constraint_seconds, 0.0)

    @property
    def checks_per_token(self) -> float:
        return self.constraint_checks / self.tokens if self.tokens else 0.0

    @property
    def particle_tokens_per_second(self) -> float:
        return self.tokens / self.total_seconds if self.total_seconds > 0 else 0.0

    def as_dict(self) -> dict:
        out = asdict(self)
        del out["advance_seconds"]
        out["advance_us_p50"] = self.advance_micros(0.5)
        out["advance_us_p99"] = self.advance_micros(0.99)
        out["sampler_seconds"] = self.sampler_seconds
        out["checks_per_token"] = self.checks_per_token
        out["particle_tokens_per_second"] = self.particle_tokens_per_second
        return out
