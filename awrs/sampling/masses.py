"""Next-token masses for a step: exp of the log-probabilities, control tokens zeroed, block sums.

This is the one pass over the whole vocabulary that every sampled step pays, unconstrained
sampling included: at 262k tokens and 10 rows it is 2.6 million exponentials. Rows are
independent, so large steps are split across a few threads (numpy releases the GIL in the
exponentials and sums; the model's threads are idle while the sampler runs). Every row's values
are computed exactly as in one pass, so the split never changes a sample.
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import ModelError
from ..vocab import Vocabulary
from .draw import BLOCK, block_sums

#: rows x vocabulary size from which a step's masses are split across threads: below it, a
#: thread's hand-over (~50 us) costs more than it saves
PARALLEL_CELLS = 1 << 20
MAX_WORKERS = 4


def token_masses(
    logprobs: np.ndarray, vocab: Vocabulary, out: np.ndarray | None = None,
    workers: MassWorkers | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Absolute next-token probabilities (special non-EOS tokens set to 0) and their block sums
    (:func:`~awrs.sampling.draw.block_sums`, what the samplers draw from).

    (n, V) and (n, blocks) float64. The masses are not renormalised: the mass removed with the
    special tokens stays out of every weight, which is what targets text without control tokens.
    ``out``: an (at least n, V) float64 buffer to write the masses into (a fresh 20 MB array
    per step at 262k tokens costs as much again in page faults as the exponentials).
    ``workers``: threads to split the rows across (:meth:`MassWorkers.suited`).
    """
    n = len(logprobs)
    if out is not None and out.shape[0] >= n and out.shape[1:] == logprobs.shape[1:]:
        mass = out[:n]
    else:
        mass = np.empty(logprobs.shape, dtype=np.float64)
    blocks = np.empty((n, -(-logprobs.shape[-1] // BLOCK)), dtype=np.float64)
    blocked = vocab.blocked_array

    def fill(rows: slice) -> None:
        np.exp(logprobs[rows], out=mass[rows], dtype=np.float64)
        if len(blocked):
            mass[rows, blocked] = 0.0
        blocks[rows] = block_sums(mass[rows])

    if workers is None or n < 2 or mass.size < PARALLEL_CELLS:
        fill(slice(0, n))
    else:
        cuts = np.linspace(0, n, min(n, workers.count) + 1).astype(int)
        workers.run(fill, [slice(a, b) for a, b in itertools.pairwise(cuts) if b > a])
    totals = blocks.sum(axis=1)
    if not np.isfinite(totals).all():  # NaN anywhere reaches the total
        rows = np.flatnonzero(~np.isfinite(totals)).tolist()
        raise ModelError(
            f"the model returned NaN or infinite log-probabilities for rows {rows[:8]}: its weights "
            "or arithmetic are broken (try the other backend, or --backend hf)"
        )
    return mass, blocks


class MassWorkers:
    """A few threads that :func:`token_masses` splits a step's rows across; one per driver."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="awrs-masses")

    def run(self, fill, parts: list[slice]) -> None:
        for done in [self._pool.submit(fill, part) for part in parts]:
            done.result()

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    @classmethod
    def suited(cls, vocab: Vocabulary, rows: int) -> MassWorkers | None:
        """Threads when steps of up to ``rows`` rows gain from them and this process may use more
        than one core; None otherwise."""
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        if cores < 2 or rows < 2 or rows * len(vocab) < PARALLEL_CELLS:
            return None
        return cls(min(cores, MAX_WORKERS, rows))
