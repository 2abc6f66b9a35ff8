"""A llama.cpp decoding session: rows of one or more prompts, each a llama.cpp sequence id.

``step(parents, tokens)`` re-maps sequence ids (a row's first child keeps its id, further
children get ids the parent's cells are copied to, childless rows are freed), then one
``llama_decode`` evaluates the new tokens. Rows whose token histories are identical (resampled
copies that drew the same token, or every row while the constraint forces the text) are
evaluated once: their token is one batch entry tagged with all their sequence ids, so it
fills one KV cell and one row of logits. A step costs what its distinct histories cost, not
its rows. Ids come from the model's :class:`~awrs.models.llamacpp_pool.SequencePool`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ..errors import ModelError
from .base import DecodingSession, merge_equal_histories, step_arguments
from .llamacpp_lib import LOG, limit_hint
from .llamacpp_pool import SequencePool


class Engine(Protocol):
    """What a session asks of its model (:class:`~awrs.models.llamacpp.LlamaCppModel`)."""

    pool: SequencePool
    n_ctx: int
    _n_vocab: int

    def _check_open(self) -> None: ...

    def _checked_prompt(self, prompt_ids: Sequence[int]) -> tuple[int, ...]: ...

    def _add_rows(self, ids: tuple[int, ...], n: int, seqs: list[int], lengths: list[int],
                  logprobs: list[np.ndarray]) -> None: ...

    def _decode(self, tokens: Sequence[int], positions: Sequence[int], seqs: Sequence[int],
                outputs: Sequence[bool]) -> int: ...

    def _decode_error(self, code: int, what: str) -> ModelError: ...

    def _logits(self, rows: int) -> np.ndarray: ...


class LlamaCppSession(DecodingSession):
    """Rows of one prompt; row ``i`` is llama.cpp sequence ``self._seqs[i]``."""

    extendable = True

    def __init__(self, model: Engine, seqs: list[int], lengths: np.ndarray, logprobs: np.ndarray,
                 histories: np.ndarray):
        self._model = model
        self._seqs = seqs
        self._lengths = lengths  # tokens in each row (prompt included)
        self._logprobs = logprobs
        # rows with equal numbers have identical token histories (and share their KV cells)
        self._histories = np.asarray(histories, dtype=np.int64)
        self.evaluated = 0  # tokens evaluated by step() so far (rows sharing a history count once)
        self._broken: str | None = None
        # an unclosed session hands its ids back when collected (freed at the next open/step)
        self._finalizer = model.pool.adopt(self, seqs)

    @property
    def rows(self) -> int:
        return len(self._seqs)

    def logprobs(self) -> np.ndarray:
        return self._logprobs

    def extend(self, prompt_ids: Sequence[int], rows: int) -> None:
        model = self._model
        if self._broken:
            raise ModelError(f"this decoding session cannot continue: {self._broken}")
        ids = model._checked_prompt(prompt_ids)
        model._check_open()
        model.pool.collect_orphans()
        model.pool.require(int(rows), len(self._seqs))
        seqs: list[int] = []
        lengths: list[int] = []
        logprobs: list[np.ndarray] = []
        model._add_rows(ids, int(rows), seqs, lengths, logprobs)
        self._seqs = self._seqs + seqs
        self._finalizer.detach()
        self._finalizer = model.pool.adopt(self, self._seqs)
        self._lengths = np.concatenate([self._lengths, np.array(lengths, dtype=np.int64)])
        new_history = int(self._histories.max()) + 1 if len(self._histories) else 0
        self._histories = np.concatenate([self._histories, np.full(len(seqs), new_history, dtype=np.int64)])
        if logprobs:
            self._logprobs = np.concatenate([self._logprobs, np.stack(logprobs)])

    def step(self, parents: np.ndarray, tokens: np.ndarray) -> None:
        model = self._model
        if self._broken:
            raise ModelError(f"this decoding session cannot continue: {self._broken}")
        if not self._finalizer.alive:
            raise ModelError("this decoding session was closed")
        old = self._seqs
        parents, tokens = step_arguments(parents, tokens, len(old), model._n_vocab)
        longest = int(self._lengths[parents].max()) if len(parents) else 0
        if longest + 1 > model.n_ctx:
            raise ModelError(
                f"a row would reach {longest + 1} tokens but the llamacpp backend's context "
                f"holds n_ctx={model.n_ctx}; " + limit_hint("n_ctx")
            )
        model._check_open()
        model.pool.collect_orphans()

        # Which old rows survive; their first child inherits the sequence id.
        seqs: list[int | None] = [None] * len(parents)
        claimed = np.zeros(len(old), dtype=bool)
        extra: list[int] = []
        for i, p in enumerate(parents.tolist()):
            if claimed[p]:
                extra.append(i)
            else:
                claimed[p] = True
                seqs[i] = old[p]
        dropped = np.flatnonzero(~claimed).tolist()
        model.pool.require(len(extra) - len(dropped), len(old))  # checked before anything changes
        for j in dropped:  # rows without children: free their cells
            model.pool.release(old[j])
        for i in extra:  # sources are kept ids: none is overwritten before it is copied
            seqs[i] = model.pool.copy_of(old[parents[i]])
        self._seqs = [int(s) for s in seqs]
        self._finalizer.detach()
        self._finalizer = model.pool.adopt(self, self._seqs)

        rows = len(self._seqs)
        positions = self._lengths[parents]
        if rows == 0:
            self._logprobs = np.zeros((0, model._n_vocab), dtype=np.float32)
            self._lengths = positions
            self._histories = np.zeros(0, dtype=np.int64)
            return
        # one evaluation per distinct (history, token): equal histories have equal positions
        first, group = merge_equal_histories(self._histories, parents, tokens)
        owners: list[list[int]] = [[] for _ in range(len(first))]
        for row, g in enumerate(group.tolist()):
            owners[g].append(self._seqs[row])
        LOG.mark()
        code = model._decode(tokens[first].tolist(), positions[first].tolist(),
                             [o[0] if len(o) == 1 else o for o in owners], [True] * len(first))
        if code != 0:
            self._broken = str(model._decode_error(code, f"extending {rows} rows to {longest + 1} tokens"))
            self.close()
            raise ModelError(self._broken)
        self.evaluated += len(first)
        self._lengths = positions + 1
        self._histories = group
        logprobs = log_softmax(model._logits(len(first)))
        self._logprobs = logprobs if len(first) == rows else logprobs[group]

    def close(self) -> None:
        if self._finalizer.detach() is not None:
            for s in self._seqs:
                self._model.pool.release(s)
        self._seqs = []
        self._logprobs = np.zeros((0, self._model._n_vocab), dtype=np.float32)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float32, in place."""
    logits -= logits.max(axis=1, keepdims=True)
    norm = np.log(np.exp(logits).sum(axis=1, keepdims=True, dtype=np.float64)).astype(np.float32)
    logits -= norm
    return logits
