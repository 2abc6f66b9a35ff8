"""Next-token masses for a step: exp of the log-probabilities, control tokens zeroed, block sums.

This is the one pass over the whole vocabulary that every sampled step pays, unconstrained
sampling included: at 262k tokens and 10 rows it is 2.6 million exponentials (about 4 ms on
one core). The masses go into a buffer the caller keeps from step to step, since a fresh 20 MB
array per step costs as much again in page faults. (Splitting the rows across threads halved
the time in isolation, but not inside a run, where llama.cpp's threads are still spinning after
the forward pass, and the pool's start cost 20 ms in a fresh process: not kept.)
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from ..vocab import Vocabulary
from .draw import block_sums


def token_masses(
    logprobs: np.ndarray, vocab: Vocabulary, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Absolute next-token probabilities (special non-EOS tokens set to 0) and their block sums
    (:func:`~awrs.sampling.draw.block_sums`, what the samplers draw from).

    (n, V) and (n, blocks) float64. The masses are not renormalised: the mass removed with the
    special tokens stays out of every weight, which is what targets text without control tokens.
    ``out``: an (at least n, V) float64 buffer to write the masses into.
    """
    n = len(logprobs)
    if out is not None and out.shape[0] >= n and out.shape[1:] == logprobs.shape[1:]:
        mass = np.exp(logprobs, out=out[:n], dtype=np.float64)
    else:
        mass = np.exp(logprobs, dtype=np.float64)
    if len(vocab.blocked_array):
        mass[:, vocab.blocked_array] = 0.0
    blocks = block_sums(mass)
    totals = blocks.sum(axis=1)
    if not np.isfinite(totals).all():  # NaN anywhere reaches the total
        rows = np.flatnonzero(~np.isfinite(totals)).tolist()
        raise ModelError(
            f"the model returned NaN or infinite log-probabilities for rows {rows[:8]}: its weights "
            "or arithmetic are broken (try the other backend, or --backend hf)"
        )
    return mass, blocks
