"""The SMC population: every particle's tokens, state and weights, and why a dead one died.

Not here: how a step changes them (:mod:`awrs.smc.step`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..constraints.base import State

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
