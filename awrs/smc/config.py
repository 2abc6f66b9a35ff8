"""How SMC runs: particles, token limit, resampling and its twists, committing."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from .budget import DEFAULT_BUDGET_TWIST, DEFAULT_COMPLETE_POWER, DEFAULT_RESAMPLE_POWER, BudgetTwist
from .resampling import get_resampler


@dataclass(frozen=True)
class SMCConfig:
    """How SMC runs. ``ess_threshold=0`` is importance sampling (never resample)."""

    particles: int = 10
    max_tokens: int = 64
    ess_threshold: float = 0.5
    resampling: str = "systematic"
    #: ``on``, ``exact`` or ``off``: the budget twist (:mod:`awrs.smc.budget`), used when resampling
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
    #: share of the resampling weight (:mod:`awrs.smc.commitment`: a resampling by prefix, drawn
    #: at random, so the target is the same); ``None``: never. What lets a stream flow.
    commit_share: float | None = None
    #: when committing, also commit the next character whatever the shares once every running
    #: particle has drawn this many tokens after the one that wrote it (a doomed continuation
    #: has had that long to show); ``None``: by share only
    commit_lag: int | None = None
    #: weigh unfinished particles, when resampling, by the constraint's look-ahead
    #: (:meth:`awrs.constraints.base.Constraint.lookahead_log_psi`), and resample whenever it
    #: doubts one: a twist like the others, so the target is the same.
    lookahead: bool = True

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
        if self.commit_lag is not None and (not isinstance(self.commit_lag, int) or self.commit_lag < 0):
            raise ConfigError(f"commit_lag must be a whole number of tokens >= 0 or None, "
                              f"got {self.commit_lag!r}")
        if self.complete_power is not None and not 0.0 <= self.complete_power <= 1.0:
            raise ConfigError(f"complete_power must be in [0, 1] or None, got {self.complete_power}")
