"""The budget twist: how likely a prefix is to end validly within the tokens it has left.

SMC targets ``pi(x) ∝ p(x) 1[x valid] 1[|x| <= L]`` (``L = max_tokens``). Its intermediate
targets, without a twist, are ``gamma_t(x_{1:t}) = p(x_{1:t}) 1[x_{1:t} alive]``: they ignore
the limit until it is reached, so resampling can bet the population on lineages that write a
300-character property name and never finish. The ideal intermediate target is
``gamma_t(x_{1:t}) psi*_t(x_{1:t})`` with

    psi*_t(x_{1:t}) = P_LCD(the text ends validly within L - t more tokens | x_{1:t})
                      x E_LCD[prod of the remaining local normalisers | it does]

(the optimal twist for the AWRS proposal, whose weights are the local normalisers Z). This
module estimates the first factor, the one the limit introduces; the second, which the
constraint's structure introduces, is left to the weights as before.

Twisted SMC with any ``psi_t > 0`` wherever ``gamma_t`` can still reach mass keeps the final
target exact: ``psi_t`` is multiplied into the weight when a particle steps, divided out the
next step (or when the text ends), so a finished text's weight is untouched and the
likelihood estimate stays unbiased; only *which* particles resampling keeps changes. Two parts:

* **Exact part.** A text that still needs ``b`` bytes (the constraint's
  :meth:`~awrs.constraints.base.Constraint.min_completion_bytes`, a lower bound) needs at
  least ``ceil(b / max_token_bytes)`` more tokens. With fewer left, ``psi = 0``: the particle
  is dropped now rather than at the limit. The target gives every such prefix zero mass, so
  this changes nothing but the time wasted on it.
* **Soft part.** ``psi = sigmoid(w · f)``, a logistic model of "finished within the tokens
  left" on features of the particle: the tokens left ``r``, the bytes still needed ``b``, the
  tokens since ``b`` last changed (a text stalled inside a free string), the tokens written,
  and the tokens since the constraint last rejected a draw (inside free text the constraint
  rarely rejects anything). Always in (0, 1), so it never removes a prefix the target keeps.
  The weights ``w`` were fitted by ``bench/fit_budget_twist.py`` on the trajectories of
  independent AWRS particles (``bench/budget_traces.py``) on JSON tuning instances; any
  constraint gets them (for one without ``min_completion_bytes``, ``b`` is 0 and the stall
  counts every token, and the other features still apply). Measured, it predicts weakly
  (log loss 0.43 against 0.48 for a constant), and the remaining structural cost a particle
  will pay, the twist's other factor, is hardly predictable from these features at all
  (R² 0.04), so the soft part is not the default: ``exact`` is.

Not here: where the twist enters the weights (:mod:`awrs.smc`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError

BUDGET_TWISTS = ("on", "exact", "off")
"""``on``: exact and soft parts; ``exact``: drop only prefixes that cannot finish; ``off``."""
DEFAULT_BUDGET_TWIST = "exact"
# 0: resampling only replaces particles that died or cannot finish, never a living lineage, so the
# valid rate is at least LCD's; chosen on the tuning subset (docs/methods.md, "Why these defaults")
DEFAULT_RESAMPLE_POWER = 0.0
# None: complete texts are weighed like the others (streamed server requests use 1, see
# awrs.smc.commitment.STREAMING_POLICY and awrs.smc.SMCConfig.complete_power)
DEFAULT_COMPLETE_POWER: float | None = None

# logit P(finished within r tokens) = w · (1, log1p r, log1p b, log1p stall, log1p t, log1p free),
# fitted by `python bench/fit_budget_twist.py bench/data/budget-traces-tune.jsonl.gz --domains json`
# (100 trajectories on 20 JSON tuning schemas; it predicts weakly: see docs/methods.md, "Why these
# defaults")
FITTED = (1.8634, 0.8955, -1.6973, -0.0334, -0.8438, -0.2757)


@dataclass(frozen=True)
class ParticleProgress:
    """What the twist knows about one particle after a step."""

    needed_bytes: int  # lower bound on the bytes a valid completion still needs
    stall: int  # tokens since needed_bytes last changed
    free_run: int  # tokens since the constraint last rejected a draw
    tokens: int  # tokens written
    left: int  # tokens it may still write before EOS is forced


@dataclass(frozen=True)
class BudgetTwist:
    """``log psi`` of a particle's progress (see the module docstring)."""

    soft: bool = True
    weights: tuple[float, ...] = FITTED

    @classmethod
    def named(cls, name: str) -> BudgetTwist | None:
        if name not in BUDGET_TWISTS:
            raise ConfigError(f"budget twist must be one of {', '.join(BUDGET_TWISTS)}, got {name!r}")
        return None if name == "off" else cls(soft=name == "on")

    def log_psi(self, progress: ParticleProgress, max_token_bytes: int) -> float:
        needed = progress.needed_bytes
        if needed > 0 and (progress.left <= 0 or needed > progress.left * max_token_bytes):
            return -math.inf
        if not self.soft:
            return 0.0
        features = (1.0, math.log1p(progress.left), math.log1p(needed), math.log1p(progress.stall),
                    math.log1p(progress.tokens), math.log1p(progress.free_run))
        z = sum(w * f for w, f in zip(self.weights, features))
        return -math.log1p(math.exp(-z)) if z > -30 else z  # log sigmoid, without overflow
