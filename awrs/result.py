"""The result of a generation run: weighted samples, posterior, likelihood estimate, statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .stats import Stats

FORMAT = "awrs/1"


@dataclass(frozen=True)
class Sample:
    """One finished particle.

    ``probability`` is its normalised weight among the run's samples; ``valid`` says whether the
    text satisfies the constraint (always true for constrained methods; checked afterwards for
    ``unconstrained``).
    """

    text: str
    probability: float
    log_weight: float
    token_ids: tuple[int, ...]
    valid: bool = True

    def to_json(self) -> dict:
        return {"text": self.text, "probability": self.probability, "valid": self.valid}


@dataclass
class Result:
    """What :func:`awrs.generate` returns.

    Attributes:
        samples: finished samples with positive weight, most probable first.
        posterior: ``{text: probability}`` over valid samples, duplicates summed; the estimate
            of p(text | constraint).
        log_marginal_likelihood: estimate of log P(constraint) under the model (unbiased in
            P for weighted methods); ``None`` where the method gives none (``lcd``, ``masking``,
            ``unconstrained``); ``-inf`` when every particle died.
        message: why there are no samples (or a warning), else ``None``.
    """

    method: str
    samples: list[Sample]
    posterior: dict[str, float]
    log_marginal_likelihood: float | None
    stats: Stats
    eos_token_ids: list[int]
    message: str | None = None
    seed: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def text(self) -> str | None:
        """The most probable text of the posterior, or None if there is no sample."""
        if not self.posterior:
            return None
        return max(self.posterior.items(), key=lambda kv: kv[1])[0]

    def to_json(self) -> dict:
        """A JSON-ready dict (strict JSON: an infinite log likelihood becomes null)."""
        log_ml = self.log_marginal_likelihood
        if log_ml is not None and not math.isfinite(log_ml):
            log_ml = None
        return {
            "format": FORMAT,
            "method": self.method,
            "samples": [s.to_json() for s in self.samples],
            "posterior": self.posterior,
            "log_marginal_likelihood": log_ml,
            "eos_token_ids": self.eos_token_ids,
            "stats": self.stats.as_dict(),
            "message": self.message,
            "seed": self.seed,
        }

    def __repr__(self) -> str:
        top = ", ".join(f"{t!r}: {p:.3f}" for t, p in list(self.posterior.items())[:3])
        return f"<Result {self.method}: {len(self.samples)} samples; posterior {{{top}}}>"
