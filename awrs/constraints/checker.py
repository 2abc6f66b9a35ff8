"""Checkers: a constraint compiled for one vocabulary.

``constraint.compile(vocab)`` returns a :class:`Checker`, built once per (constraint,
vocabulary) pair and shared by every particle and every run that uses both. The split is the
one mask engines make (an index per vocabulary, a small state per sequence):

* the checker owns everything that depends on the vocabulary -- token bytes, first-byte
  groups, a mask engine's token matcher, masks already computed -- and is never copied;
* particles hold only the constraint's states: small immutable values, shared freely.

Samplers talk to checkers only, so per-token work never re-derives a per-vocabulary fact.
The generic checker here serves every constraint; a constraint with a mask engine returns its
own subclass (:class:`~awrs.constraints.regex.automaton.AutomatonChecker`,
:class:`~awrs.constraints.grammar.grammar.GrammarChecker`).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .dead import DEAD, State

if TYPE_CHECKING:
    from ..vocab import Vocabulary


class ByteChecks(Protocol):
    """The byte-level half of a constraint (:class:`~awrs.constraints.base.Constraint`)."""

    def start(self) -> State: ...

    def advance(self, state: State, data: bytes) -> State: ...

    def is_complete(self, state: State) -> bool: ...

    def next_bytes(self, state: State) -> frozenset[int] | None: ...

    def describe(self) -> str: ...

NO_TOKENS = np.zeros(0, dtype=np.int64)


class Checker:
    """Token-level checks of one constraint over one vocabulary.

    The byte-level methods (``start``, ``advance``, ``is_complete``, ``next_bytes``,
    ``mask_key``) are the constraint's own; this class adds what needs the vocabulary.
    """

    #: :meth:`token_mask` returns exactly the tokens :meth:`advance` accepts.
    exact_masks: bool = False
    #: What one :meth:`token_mask` costs, in token checks (``inf``: no mask engine).
    mask_cost: float = math.inf
    #: :meth:`accepts_token` is much cheaper than building the state (samplers then check
    #: candidates with it and build a state only for the token a particle keeps).
    cheap_checks: bool = False

    def __init__(self, constraint: ByteChecks, vocab: Vocabulary) -> None:
        self.constraint = constraint
        self.vocab = vocab
        # bound once: these run for every drawn token
        self.start = constraint.start
        self.advance = constraint.advance
        self.is_complete = constraint.is_complete
        self.next_bytes = constraint.next_bytes

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.constraint.describe()}, {len(self.vocab)} tokens)"

    def advance_token(self, state: State, token: int) -> State:
        """The state after a (non-EOS) token's bytes, or DEAD."""
        return self.advance(state, self.vocab.tokens[token])

    def accepts_token(self, state: State, token: int) -> bool:
        """Whether a (non-EOS) token may follow ``state``: ``advance_token(...) is not DEAD``."""
        return self.advance_token(state, token) is not DEAD

    def candidate_tokens(self, state: State) -> np.ndarray | None:
        """A cheap hint: ids that may be accepted after ``state`` (EOS excluded), or None.

        Must include every token that :meth:`advance` accepts; derived from the
        constraint's ``next_bytes`` and the vocabulary's first-byte groups.
        """
        allowed = self.next_bytes(state)
        if allowed is None:
            return None
        if not allowed:
            return NO_TOKENS
        return self.vocab.tokens_starting_with(allowed)

    def token_mask(self, state: State) -> np.ndarray | None:
        """Sorted ids of the non-EOS tokens allowed after ``state``; None: no mask engine.

        Must contain every token that :meth:`advance` accepts (samplers remove the others as
        known rejections, which keeps weights exact); with :attr:`exact_masks` it is exactly
        the accepted set.
        """
        return None

    def mask_key(self, state: State) -> Hashable | None:
        """States with equal keys have equal masks; None if masks are not shared."""
        return None
