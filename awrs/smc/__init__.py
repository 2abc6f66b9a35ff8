"""Sequential Monte Carlo over token sequences, and what it uses.

- :mod:`~awrs.smc.particles`: the population; :mod:`~awrs.smc.config`: how SMC runs;
- :mod:`~awrs.smc.step`: one step of one job (draw, weigh, twist, commit, resample);
- :mod:`~awrs.smc.driver`: jobs sharing one batched model session, :func:`run_smc`;
- :mod:`~awrs.smc.budget`: the budget twist; :mod:`~awrs.smc.resampling`: the schemes and
  weight arithmetic; :mod:`~awrs.smc.commitment`: committing text while SMC runs;
  :mod:`~awrs.smc.streaming`: the text a running population can already promise.
"""

from .config import SMCConfig
from .driver import PREFILL_CHUNK, Driver, run_smc, run_smc_many
from .particles import ALIVE, DIED_AT_DEAD_END, DIED_AT_LIMIT, DIED_OUT_OF_BUDGET, Particles
from .step import Critic, Job, Run

__all__ = [
    "ALIVE",
    "DIED_AT_DEAD_END",
    "DIED_AT_LIMIT",
    "DIED_OUT_OF_BUDGET",
    "PREFILL_CHUNK",
    "Critic",
    "Driver",
    "Job",
    "Particles",
    "Run",
    "SMCConfig",
    "run_smc",
    "run_smc_many",
]
