"""The result of a generation run: weighted samples, posterior, likelihood estimate, statistics;
and how a finished SMC population becomes one (:func:`from_population`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .smc.particles import DIED_AT_DEAD_END, DIED_AT_LIMIT, DIED_OUT_OF_BUDGET
from .smc.resampling import effective_sample_size, log_mean_exp, normalized
from .stats import Stats

if TYPE_CHECKING:
    from .constraints.base import Constraint
    from .models.base import LanguageModel
    from .sampling.samplers import TokenSampler
    from .smc.particles import Particles

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


def decoded_text(model: LanguageModel, ids: Sequence[int]) -> str:
    """The text of ``ids``; bytes that are not UTF-8 (a cut character) show as U+FFFD."""
    return model.vocab.decode(ids).decode("utf-8", errors="replace")


def from_population(
    method: str, population: Particles, model: LanguageModel, constraint: Constraint,
    sampler: TokenSampler, stats: Stats,
) -> Result:
    """The :class:`Result` of a finished SMC population: its texts, normalised weights and
    posterior, and, when no text is valid, a message that says why."""
    alive = np.isfinite(population.log_weights)
    if sampler.weighted:
        log_weights = population.log_weights
        log_ml: float | None = log_mean_exp(log_weights)
    else:  # independent draws of one distribution: equal weights among survivors
        log_weights = np.where(alive, 0.0, -np.inf)
        log_ml = None
    # A text the model did not end (EOS forced at the token limit) is valid only for samplers
    # whose weights account for the limit; an unconstrained draw cut short is not a sample.
    valid = [
        bool(alive[i]) and (
            sampler.checks_during_generation
            or (not population.truncated[i] and constraint.accepts(model.vocab.decode(population.tokens[i])))
        )
        for i in range(len(population))
    ]
    probabilities = normalized(log_weights)
    samples = [
        Sample(
            text=decoded_text(model, population.tokens[i]),
            probability=float(probabilities[i]),
            log_weight=float(population.log_weights[i]),
            token_ids=tuple(population.tokens[i]),
            valid=valid[i],
        )
        for i in np.argsort(-probabilities, kind="stable")
        if probabilities[i] > 0
    ]
    posterior = posterior_of(samples)
    return Result(
        method=method,
        samples=samples,
        posterior=posterior,
        log_marginal_likelihood=log_ml,
        stats=stats,
        eos_token_ids=sorted(model.vocab.eos_ids),
        message=_explain(samples, posterior, population, constraint, model),
    )


def posterior_of(samples: Sequence[Sample]) -> dict[str, float]:
    """The probability of each valid text, its samples' probabilities summed and renormalised."""
    totals: dict[str, float] = {}
    for s in samples:
        if s.valid:
            totals[s.text] = totals.get(s.text, 0.0) + s.probability
    norm = sum(totals.values())
    if norm <= 0:
        return {}
    return dict(sorted(((t, p / norm) for t, p in totals.items()), key=lambda kv: -kv[1]))


def _explain(
    samples: Sequence[Sample], posterior: dict, population: Particles, constraint: Constraint,
    model: LanguageModel,
) -> str | None:
    if posterior:
        return None
    n = len(population)
    if samples:
        return f"none of the {len(samples)} finished texts satisfies the {constraint.describe()}"
    # Count the final population, not events: resampling copies particles, and the copies of
    # one lineage die again, so the event counters in ``stats`` can exceed the particle count.
    causes = np.bincount(population.died_of, minlength=4)
    parts = []
    if causes[DIED_AT_DEAD_END]:
        parts.append(f"{causes[DIED_AT_DEAD_END]} reached a prefix that no token can continue")
    if causes[DIED_AT_LIMIT]:
        parts.append(f"{causes[DIED_AT_LIMIT]} were incomplete at max_tokens (raise max_tokens)")
    if causes[DIED_OUT_OF_BUDGET]:
        parts.append(f"{causes[DIED_OUT_OF_BUDGET]} could not have finished in the tokens they had left "
                     "(raise max_tokens)")
    reasons = "; ".join(parts) if parts else "every particle died"
    # What the model was writing is usually the fix's hint (a free string that never closes,
    # properties the schema allows but the prompt did not ask for).
    furthest = decoded_text(model, max(population.tokens, key=len))
    shown = f"; the furthest particle wrote {_preview(furthest)}" if furthest else ""
    return f"no sample satisfies the {constraint.describe()}: of {n} particles, {reasons}{shown}"


def _preview(text: str, head: int = 60, tail: int = 20) -> str:
    if len(text) <= head + tail + 5:
        return repr(text)
    return f"{text[:head]!r} ... {text[-tail:]!r} ({len(text)} characters)"
