"""The language-model interface every backend implements.

A model has a :class:`~awrs.vocab.Vocabulary` and opens *decoding sessions*. A session holds
the KV cache of many rows (one per live particle) that all continue one prompt:

* ``model.open(prompt_ids, rows)`` evaluates the prompt once and shares it between the rows;
* ``session.logprobs()`` is the (rows, V) matrix of next-token log-probabilities;
* ``session.step(parents, tokens)`` builds the next rows in one batched forward pass: new row
  ``i`` is old row ``parents[i]`` extended by ``tokens[i]``. Resampling (rows copied or dropped)
  and finished particles (rows dropped) are a reordering of the cache, never a recomputation.

Not here: sampling and constraints.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from ..errors import ModelError
from ..vocab import Vocabulary

Message = dict  # {"role": ..., "content": ...}


class RowsNotExtendable(ModelError):
    """This backend's sessions cannot take new rows while they run (no continuous batching)."""


def step_arguments(parents, tokens, rows: int, vocab_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A step's ``(parents, tokens)`` as int64 vectors, checked against the session's ``rows``
    and, when given, the vocabulary's size; ModelError on a mismatch."""
    parents = np.asarray(parents, dtype=np.int64).reshape(-1)
    tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
    if len(parents) != len(tokens):
        raise ModelError(f"step got {len(parents)} parents but {len(tokens)} tokens")
    if len(parents) and (parents.min() < 0 or parents.max() >= rows):
        raise ModelError(f"parents must be row indices in [0, {rows}), got {parents.tolist()}")
    if vocab_size is not None and len(tokens) and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ModelError(f"token ids must be in [0, {vocab_size}), got {tokens.tolist()}")
    return parents, tokens


def merge_equal_histories(histories: np.ndarray, parents: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group a step's rows by (parent's history, token): rows in one group have equal histories
    after the step, so a backend evaluates each group once.

    ``histories[r]``: a number shared by the rows whose token histories are equal. Returns
    ``(first, group)``: ``first[g]`` is the first row of group ``g`` (groups numbered in order
    of first appearance, so ``group`` is ``arange`` when no two rows merge) and ``group[row]``
    the row's group, which serves as its history number after the step.
    """
    stride = int(tokens.max()) + 1 if len(tokens) else 1
    _, first, inverse = np.unique(histories[parents] * stride + tokens, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[inverse.reshape(-1)].astype(np.int64)


class DecodingSession(ABC):
    """Batched, KV-cached decoding of several rows that share one prompt."""

    #: :meth:`extend` works (rows of a new prompt may join between steps)
    extendable: bool = False

    @property
    @abstractmethod
    def rows(self) -> int:
        """How many rows the session holds now."""

    @abstractmethod
    def logprobs(self) -> np.ndarray:
        """(rows, V) next-token log-probabilities (float32 or float64)."""

    @abstractmethod
    def step(self, parents: np.ndarray, tokens: np.ndarray) -> None:
        """New row i = old row ``parents[i]`` followed by ``tokens[i]``; one forward pass."""

    def extend(self, prompt_ids: Sequence[int], rows: int) -> None:
        """Add ``rows`` rows continuing ``prompt_ids`` after the existing rows; their
        next-token log-probabilities join :meth:`logprobs` (continuous batching: a request
        joins a running session between steps). Backends that cannot raise ModelError."""
        raise RowsNotExtendable(f"{type(self).__name__} cannot add rows to a running session")

    def close(self) -> None:
        """Free the session's memory early (optional)."""


class LanguageModel(ABC):
    """A causal language model behind awrs's batched interface."""

    vocab: Vocabulary
    name: str = "model"
    backend: str = "custom"  # "hf", "llamacpp", "table": which implementation runs it
    weights: str = ""  # the embedded model's weight format as run ("Q8_0", "F32", ...), else ""
    #: rows alive at once over all sessions, and KV cells they share (prompts counted once);
    #: None: no fixed limit. Servers admit requests within both.
    max_rows: int | None = None
    max_cells: int | None = None

    @property
    def runs_as(self) -> str:
        """What runs it, for people: the backend and the weight format (``"llamacpp, F16"``)."""
        return ", ".join(filter(None, (self.backend, self.weights)))

    @abstractmethod
    def open(self, prompt_ids: Sequence[int], rows: int) -> DecodingSession:
        """Start ``rows`` identical rows after ``prompt_ids`` (the prompt is evaluated once)."""

    def open_many(self, prompts: Sequence[Sequence[int]], rows: Sequence[int]) -> DecodingSession:
        """Rows for several prompts in one session: ``rows[k]`` rows continue ``prompts[k]``.

        The session's rows are the prompts' rows in order. Backends that can batch different
        prompts override this; the default handles identical prompts only.
        """
        first = [int(i) for i in prompts[0]]
        if any([int(i) for i in p] != first for p in prompts[1:]):
            raise ModelError(f"{self.name} cannot batch different prompts in one session")
        return self.open(first, int(sum(rows)))

    def prefill(self, prompt_ids: Sequence[int], budget: int) -> bool:
        """Evaluate at most ``budget`` more tokens of a prompt ahead of :meth:`DecodingSession.extend`;
        True once it is ready. Backends without chunked prefill evaluate it in ``extend``."""
        return True

    def forget_prompts(self) -> None:
        """Drop what is kept of earlier prompts, so that the next prompt is read from scratch
        (and its memory freed). Results do not need it: a backend that re-uses a prompt
        prefix must give the log-probabilities of a fresh evaluation, bit for bit."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of a plain-text prompt, with the tokenizer's default special tokens."""

    def apply_chat_template(self, messages: Sequence[Message]) -> list[int]:
        """Token ids of a chat conversation, ready for the assistant's turn."""
        raise ModelError(f"{self.name} has no chat template; prompt it with plain text (without --chat)")

    @property
    def has_chat_template(self) -> bool:
        """Whether chat prompts work (base models have no template: prompt them with text)."""
        return type(self).apply_chat_template is not LanguageModel.apply_chat_template

    def prompt_ids(
        self, prompt: str | Sequence[int] | Sequence[Message], *, chat: bool = False,
        system: str | None = None,
    ) -> list[int]:
        """Turn a prompt given as text, token ids or chat messages into token ids."""
        if isinstance(prompt, str):
            if not chat:
                return self.encode(prompt)
            messages: list[Message] = [{"role": "user", "content": prompt}]
            if system is not None:
                messages.insert(0, {"role": "system", "content": system})
            return self.apply_chat_template(messages)
        items = list(prompt)
        if all(isinstance(m, dict) for m in items) and items:
            return self.apply_chat_template(items)
        ids = [int(i) for i in items]
        size = len(self.vocab)
        bad = [i for i in ids if not 0 <= i < size]
        if bad:
            raise ValueError(f"prompt token ids {bad[:5]} are outside the vocabulary (size {size})")
        return ids

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} V={len(self.vocab)}>"
