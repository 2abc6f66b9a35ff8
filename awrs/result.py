"""The result of a generation run: weighted samples, posterior, likelihood estimate, statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .smc.resampling import effective_sample_size
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
        ess: the effective sample size of the posterior (see :attr:`ess`).
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

    @property
    def ess(self) -> float:
        """The effective sample size of the posterior: 1 / sum(p_i^2), where p_i are the
        probabilities of the valid samples (those the posterior is made of; two samples with the
        same text count as two), scaled to sum to 1.

        Between 1 and the number of valid samples: about 1 when one sample carries nearly all
        the weight, so the posterior is one draw whatever its probabilities say; equal to the
        number of valid samples for the methods without weights (``lcd``, ``masking``,
        ``unconstrained``, ``rejection``); 0 when there is no valid sample.
        """
        probabilities = [s.probability for s in self.samples if s.valid and s.probability > 0]
        if not probabilities:
            return 0.0
        # Rounded so that equal weights give the count exactly (5, not 4.999999999999999).
        return round(effective_sample_size(np.log(probabilities)), 6)

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
            "ess": self.ess,
            "eos_token_ids": self.eos_token_ids,
            "stats": self.stats.as_dict(),
            "message": self.message,
            "seed": self.seed,
        }

    def __repr__(self) -> str:
        top = ", ".join(f"{t!r}: {p:.3f}" for t, p in list(self.posterior.items())[:3])
        return f"<Result {self.method}: {len(self.samples)} samples; posterior {{{top}}}>"
