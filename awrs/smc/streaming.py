"""What a running SMC population can already promise, step by step.

Particles only ever grow, and a particle whose weight is zero never comes back (resampling
replaces it by a copy of a living one). So the bytes that every particle still carrying weight
shares -- finished ones included -- begin every text the run can still return: every posterior
text, whichever is chosen. :class:`SettledText` follows that common prefix and hands out its
growth, whole characters only, so a stream built from it never takes back a word.

:func:`step_event` describes one step for tools that draw the run (the server's
``awrs_events`` stream, the playground): every particle's text, weight and state, the token
each drew and the candidates it rejected first, the resampling and the ESS.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import numpy as np

from .resampling import effective_sample_size

if TYPE_CHECKING:
    from ..vocab import Vocabulary
    from .particles import Particles


def whole_characters(data: bytes) -> bytes:
    """``data`` without a trailing UTF-8 character that more bytes may still complete."""
    for back in range(1, min(3, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return data
        if byte >= 0xC0:  # the lead byte of the last character
            needed = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return data[:-back] if back < needed else data
    return data


class SettledText:
    """The text that every weight-carrying particle shares, and its growth since last asked."""

    def __init__(self, vocab: Vocabulary) -> None:
        self._vocab = vocab
        self._sent = b""
        self.text = ""  # everything handed out so far

    def update(self, particles: Particles) -> str:
        """Characters settled since the last call ('' if none)."""
        carrying = np.flatnonzero(np.isfinite(particles.log_weights)).tolist()
        if not carrying:
            return ""
        decode = self._vocab.decode
        common = os.path.commonprefix([decode(particles.tokens[i]) for i in carrying])
        settled = whole_characters(common)
        if len(settled) <= len(self._sent) or not settled.startswith(self._sent):
            return ""
        delta = settled[len(self._sent):].decode("utf-8", errors="replace")
        self._sent = settled
        self.text += delta
        return delta


MAX_REJECTED = 16  # rejected candidates listed per drawn token


def step_event(particles: Particles, vocab: Vocabulary, step: int) -> dict:
    """One SMC step as a JSON-ready dict.

    ``particles``: every particle after the step (text, tokens, log weight, state); ``drawn``:
    the token each particle drew at this step and up to 16 candidates it checked and rejected
    first, numbered as before the step's resampling; ``parents``: when the step resampled, the
    particle each particle now copies (else None); ``ess`` of the unfinished particles.
    """
    weights = particles.log_weights
    alive = np.isfinite(weights)
    moving = ~particles.finished
    rows = []
    for i, tokens in enumerate(particles.tokens):
        state = "dead" if not alive[i] else ("finished" if particles.finished[i] else "running")
        rows.append({
            "text": vocab.decode(tokens).decode("utf-8", errors="replace"),
            "tokens": len(tokens),
            "log_weight": float(weights[i]) if alive[i] else None,
            "state": state,
        })
    last = particles.last_step or {}
    drawn = []
    for i, (token, rejected) in sorted((last.get("drawn") or {}).items()):
        drawn.append({
            "particle": i,
            "token": _piece(vocab, token) if token >= 0 else None,
            "eos": token in vocab.eos_ids,
            "rejected": [_piece(vocab, t) for t in rejected[:MAX_REJECTED]],
            "rejections": len(rejected),
        })
    ess = effective_sample_size(weights[moving]) if moving.any() else 0.0
    return {
        "step": step,
        "particles": rows,
        "drawn": drawn,
        "parents": last.get("parents"),
        "resampled": last.get("parents") is not None,
        "ess": None if math.isnan(ess) else round(float(ess), 3),
    }


def _piece(vocab: Vocabulary, token: int) -> str:
    return vocab.tokens[token].decode("utf-8", errors="replace") if token not in vocab.special_ids else ""
