"""Committing text while SMC runs, so that a stream can send it: a resampling by prefix.

A stream may only send text that every particle still carrying weight shares (see
:class:`awrs.smc.streaming.SettledText`); independent particles share little until they finish.
Committing makes them share it without changing the target: when every weight-carrying
particle has written past the shared text, they are grouped by the next character they wrote,
and one group is *drawn* with some probability ``q_g``. The other particles are dropped and the
chosen group's weights are divided by ``q_g``. For any ``q`` this keeps every particle's
expected weight (``q_g`` x ``w / q_g``), so the population stays properly weighted for the same
target and the likelihood estimate stays unbiased; the dropped slots are refilled by the
ordinary resampling that follows, from the chosen group.

When to draw, and with which ``q``, is what keeps a valid answer within reach, because
committed text is never taken back: if every particle that continues it fails, the run has
no answer. So:

* a group is drawn with probability proportional to its share of the resampling weight to the
  power :data:`DRAW_POWER` (3), not to its share: a lone particle that strayed from four others
  is drawn 1 time in 65, not 1 in 5, and when it is, its weight makes up for it;
* a character is committed once one group holds ``share`` of the weight, or, with ``lag``,
  once every running particle has drawn ``lag`` tokens after the one that wrote it, whatever
  the shares (a stream then trails the particles by ``lag`` steps, and a continuation has had
  that long to die or lose weight before the particles are made to follow it);
* nothing is committed once a text has finished (a finished text is never dropped: on a model
  that rarely finishes it may be the only valid one), and while some running texts could end
  now, only a draw that keeps one of them whichever group it picks (each such lineage is about
  to give a valid answer).

Measured in docs/evaluation/stream-commit (Spider, Qwen2.5-Coder 0.5B, 20 tuning questions, 5
particles) and on the fruit request of ``bench/stream_latency.py``.

Not here: when the step resamples (:mod:`awrs.smc`), what a stream sends
(:mod:`awrs.smc.streaming`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from .resampling import normalized
from .streaming import whole_characters

if TYPE_CHECKING:
    from ..vocab import Vocabulary
    from .particles import Particles

#: ``Particles.died_of`` of a particle dropped because another group of texts was committed
DIED_UNCOMMITTED = 4

#: a group is drawn with probability proportional to its share of the weight to this power, so a
#: lone particle that strayed from the others is seldom the one every particle must continue
#: (any positive chances keep the target: the chosen group's weights are divided by its chance)
DRAW_POWER = 3.0

#: What a streamed server request runs with unless it says otherwise: commit a character once
#: every running particle has drawn three tokens after it, whatever the shares (share 1: never
#: sooner), and let complete texts compete by weight among themselves
#: (:class:`awrs.smc.SMCConfig`), so that particles come to share text early. Chosen on the
#: fruit request of ``bench/stream_latency.py`` on the embedded model (16 seeds: all flow at
#: a lag of 3, 15 at 2, 12 at 4 with one left without an answer) and 20 Spider tuning
#: questions with Qwen2.5-Coder 0.5B, two seeds (valid 0.825 at a lag of 2 and 3, 0.875 at 4,
#: 0.80 for share 0.3 without a lag); docs/evaluation/stream-commit.
STREAMING_POLICY = {"commit_share": 1.0, "commit_lag": 3, "complete_power": 1.0}


def commit_prefix(
    particles: Particles, vocab: Vocabulary, share: float, rng: np.random.Generator,
    complete: Callable[[int], bool] | None = None, *, lag: int | None = None,
) -> int:
    """Commit next characters while the particles have written far enough past them (``lag``)
    or one group holds ``share`` of the weight; returns how many characters were committed
    (0: none; the population is then untouched)."""
    committed = 0
    if (particles.finished & np.isfinite(particles.log_weights)).any():
        return 0  # a finished text is kept whatever comes: it may be the only valid one
    could_end = set()
    if complete is not None:
        could_end = {int(i) for i in np.flatnonzero(~particles.finished & np.isfinite(particles.log_weights))
                     if complete(i)}
    while True:
        carrying = np.flatnonzero(np.isfinite(particles.log_weights))
        if len(carrying) < 2:
            return committed
        texts = [vocab.decode(particles.tokens[i]) for i in carrying]
        groups = _next_character_groups(texts, particles.finished[carrying])
        if groups is None or len(groups) < 2:
            return committed
        members = [carrying[positions] for positions in groups.values()]
        if could_end and not all(could_end.intersection(group.tolist()) for group in members):
            return committed  # a draw could drop every text that could end now: keep them all
        weights = normalized(particles.log_weights[carrying])
        shares = np.array([weights[positions].sum() for positions in groups.values()])
        shares /= shares.sum()
        if shares.max() < share:  # no group holds the share: only the lag can commit
            if lag is None or _tokens_past(particles, vocab, carrying, texts, groups) < lag:
                return committed
        chances = shares**DRAW_POWER / (shares**DRAW_POWER).sum()
        chosen = int(rng.choice(len(chances), p=chances))
        keep = np.zeros(len(particles), dtype=bool)
        keep[members[chosen]] = True
        dropped = np.flatnonzero(~keep & np.isfinite(particles.log_weights))
        particles.log_weights[dropped] = -math.inf
        particles.finished[dropped] = True
        particles.died_of[dropped] = DIED_UNCOMMITTED
        particles.log_weights[keep] -= math.log(chances[chosen])
        committed += 1


def _tokens_past(particles: Particles, vocab: Vocabulary, carrying: np.ndarray, texts: list[bytes],
                 groups: dict[bytes, list[int]]) -> int:
    """The fewest tokens a running particle has drawn after the one that wrote its next
    character (the first past the common prefix): how long its continuation has had to show
    whether it leads anywhere. Finished texts have said all they will and do not count."""
    common = len(whole_characters(_common_prefix(texts)))
    fewest = math.inf
    for key, positions in groups.items():
        for k in positions:
            if particles.finished[carrying[k]]:
                continue
            start, past = len(texts[k]), 0  # the start of each token, from the last one back
            for token in reversed(particles.tokens[carrying[k]]):
                start -= len(vocab.decode([token]))
                if start < common + len(key):
                    break
                past += 1
            fewest = min(fewest, past)
    return 0 if fewest == math.inf else int(fewest)


def _next_character_groups(texts: list[bytes], finished: np.ndarray) -> dict[bytes, list[int]] | None:
    """Positions in ``texts`` grouped by the whole character that follows their common prefix
    (``b""`` for finished texts that end there); None if a running text has not written it yet."""
    common = len(whole_characters(_common_prefix(texts)))
    groups: dict[bytes, list[int]] = {}
    for k, text in enumerate(texts):
        rest = text[common:]
        if not rest:
            if not finished[k]:
                return None
            key = b""
        else:
            key = _first_character(rest)
            if key is None:  # it ends inside a character: which one is not known yet
                return None
        groups.setdefault(key, []).append(k)
    return groups


def _common_prefix(texts: list[bytes]) -> bytes:
    first, last = min(texts), max(texts)
    n = 0
    while n < len(first) and first[n] == last[n]:
        n += 1
    return first[:n]


def _first_character(data: bytes) -> bytes | None:
    """The first UTF-8 character of ``data``, or None if ``data`` ends inside it."""
    lead = data[0]
    size = 1 if lead < 0xC0 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    return data[:size] if len(data) >= size else None
