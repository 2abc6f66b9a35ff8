"""Tiny exact models: next-token probabilities given by a table or a function.

Used by tests and examples: every probability is known, so samplers can be checked against
exact enumeration. They implement the same batched interface as the real backends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..vocab import Vocabulary
from .base import DecodingSession, LanguageModel

Context = tuple[int, ...]
NextProbs = Callable[[Context], Sequence[float] | np.ndarray]


class TableModel(LanguageModel):
    """A language model whose next-token distribution is a function of the context.

    Args:
        tokens: the bytes of each token id (strings are UTF-8 encoded).
        next_probs: ``context -> probabilities`` over all token ids (normalised here); the
            context holds the prompt ids followed by the generated ids.
        eos: the end-of-sequence id(s).
        special: ids of other special tokens.
    """

    backend = "table"

    def __init__(
        self,
        tokens: Sequence[bytes | str],
        next_probs: NextProbs,
        eos: int | Sequence[int],
        special: Sequence[int] = (),
        name: str = "table",
    ) -> None:
        token_bytes = tuple(t.encode("utf-8") if isinstance(t, str) else bytes(t) for t in tokens)
        eos_ids = frozenset([eos] if isinstance(eos, int) else eos)
        self.vocab = Vocabulary(token_bytes, eos_ids, frozenset(special))
        self._next_probs = next_probs
        self._cache: dict[Context, np.ndarray] = {}
        self.name = name
        self.calls = 0  # batched forward calls, for tests of batching

    @classmethod
    def from_table(
        cls,
        tokens: Sequence[bytes | str],
        table: Mapping[Context, Sequence[float]],
        eos: int | Sequence[int],
        default: Sequence[float] | None = None,
        **kwargs,
    ) -> TableModel:
        """A model from an explicit table ``{context: probabilities}`` with an optional default."""

        def next_probs(context: Context) -> Sequence[float]:
            if context in table:
                return table[context]
            if default is None:
                raise KeyError(f"no next-token probabilities for context {context}")
            return default

        return cls(tokens, next_probs, eos, **kwargs)

    def logprobs_of(self, context: Sequence[int]) -> np.ndarray:
        """Normalised next-token log-probabilities, (V,) float64."""
        key = tuple(context)
        cached = self._cache.get(key)
        if cached is None:
            probs = np.asarray(self._next_probs(key), dtype=np.float64)
            if probs.shape != (len(self.vocab),) or (probs < 0).any() or probs.sum() <= 0:
                raise ValueError(f"bad next-token probabilities for context {key}: {probs}")
            with np.errstate(divide="ignore"):
                cached = np.log(probs / probs.sum())
            self._cache[key] = cached
        return cached

    def encode(self, text: str) -> list[int]:
        """Greedy longest-match tokenization over the table's (non-special) tokens."""
        data = text.encode("utf-8")
        ids: list[int] = []
        order = sorted(
            (i for i in range(len(self.vocab)) if i not in self.vocab.special_ids and self.vocab.tokens[i]),
            key=lambda i: -len(self.vocab.tokens[i]),
        )
        pos = 0
        while pos < len(data):
            for i in order:
                tok = self.vocab.tokens[i]
                if data.startswith(tok, pos):
                    ids.append(i)
                    pos += len(tok)
                    break
            else:
                raise ValueError(f"cannot tokenize {text!r} at byte {pos}")
        return ids

    def open(self, prompt_ids: Sequence[int], rows: int) -> DecodingSession:
        return self.open_many([prompt_ids], [rows])

    def open_many(self, prompts: Sequence[Sequence[int]], rows: Sequence[int]) -> DecodingSession:
        self.calls += 1
        contexts = [tuple(int(i) for i in p) for p, n in zip(prompts, rows) for _ in range(n)]
        return _TableSession(self, contexts)


class _TableSession(DecodingSession):
    extendable = True

    def __init__(self, model: TableModel, contexts: list[Context]):
        self._model = model
        self._contexts = contexts
        self._logprobs = self._compute()

    def _compute(self) -> np.ndarray:
        if not self._contexts:
            return np.zeros((0, len(self._model.vocab)))
        return np.stack([self._model.logprobs_of(c) for c in self._contexts])

    @property
    def rows(self) -> int:
        return len(self._contexts)

    def logprobs(self) -> np.ndarray:
        return self._logprobs

    def step(self, parents: np.ndarray, tokens: np.ndarray) -> None:
        self._model.calls += 1
        self._contexts = [self._contexts[p] + (int(t),) for p, t in zip(parents, tokens)]
        self._logprobs = self._compute()

    def extend(self, prompt_ids: Sequence[int], rows: int) -> None:
        self._model.calls += 1
        self._contexts = self._contexts + [tuple(int(i) for i in prompt_ids)] * int(rows)
        self._logprobs = self._compute()
