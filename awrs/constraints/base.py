"""The constraint interface: an incremental, byte-level check of a text and its prefixes.

A constraint is immutable configuration (a compiled pattern, a schema). Progress through a text
is held in a *state*: a small immutable value that particles share freely. ``advance`` maps a
state and some bytes to a new state, or to :data:`DEAD` when no valid completion exists.

The contract every constraint keeps, because AWRS and SMC are exact only under it:

* never reject a prefix of a valid text (``advance`` may return a live state for a prefix that
  cannot be completed: that only costs pruning, and is caught at ``is_complete``);
* ``is_complete`` is true exactly when the text so far is valid as a whole.

The algebra lives here too, because ``&`` and ``.scored`` build it: ``All(a, b)`` accepts a
text when every part does; its state is the tuple of the parts' states, so particles still share
them. Hints and masks combine by intersection, and the mask is exact only when every part's is.
``Scored(constraint, score)`` keeps the constraint's hard check and carries a soft score
``score(text, finished) -> log weight``, which SMC applies as a critic (a twist on prefixes, a
factor on finished texts).

Not here: tokens. A constraint works on bytes; ``constraint.compile(vocab)`` gives its checker
for one vocabulary (:mod:`awrs.constraints.checker`), which owns token-level hints and masks.
"""

from __future__ import annotations

import math
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Final

import numpy as np

from ..errors import ConfigError
from .checker import Checker
from .dead import DEAD, State

if TYPE_CHECKING:
    from ..vocab import Vocabulary



_COMPILE_LOCK = threading.Lock()


def as_bytes(text: str | bytes) -> bytes:
    return text.encode("utf-8") if isinstance(text, str) else bytes(text)


class Constraint(ABC):
    """A prefix-checkable set of valid texts over bytes (UTF-8 for text constraints)."""

    @abstractmethod
    def start(self) -> State:
        """The state of the empty text."""

    @abstractmethod
    def advance(self, state: State, data: bytes) -> State:
        """The state after appending ``data``, or :data:`DEAD` if no completion is valid."""

    @abstractmethod
    def is_complete(self, state: State) -> bool:
        """Whether the text that led to ``state`` is valid as a whole."""

    def next_bytes(self, state: State) -> frozenset[int] | None:
        """The bytes a valid continuation may start with, or None if any byte may.

        An optional hint that lets samplers skip tokens that must be rejected (exactly: only
        tokens that cannot be valid are skipped). An empty set means the text admits no
        continuation at all, only EOS. The default, None, is always safe.
        """
        return None

    def min_completion_bytes(self, state: State) -> int:
        """A lower bound on the bytes any valid completion of ``state`` still needs (0 if complete).

        Optional: SMC uses it to drop prefixes that cannot finish within the tokens left (a
        token holds at most ``vocab.max_token_bytes`` bytes), and as a feature of how far a
        text is from done. It must never exceed the true shortest completion; the default, 0,
        is always safe.
        """
        return 0

    def lookahead_log_psi(self, state: State) -> float:
        """A look-ahead for SMC: the log of a weight (at most 0) that says how doubtful it is
        that ``state``'s text still has a valid completion.

        Optional: SMC's resampling multiplies a particle's weight by it and takes it back the
        next step (a twist), so any value keeps the target exact; a good one moves particles
        away from prefixes that are doomed before the constraint can prove it. The default, 0,
        has no opinion.
        """
        return 0.0

    def compile(self, vocab: Vocabulary) -> Checker:
        """This constraint's checker for ``vocab`` (see :mod:`awrs.constraints.checker`).

        Built on first use, then shared by every particle and run over the same vocabulary.
        """
        with _COMPILE_LOCK:
            checkers = self.__dict__.setdefault("_checkers", weakref.WeakKeyDictionary())
            checker = checkers.get(vocab)
        if checker is None:  # built outside the lock: a combinator compiles its parts
            built = self._checker(vocab)
            with _COMPILE_LOCK:
                checker = checkers.setdefault(vocab, built)
        return checker

    def _checker(self, vocab: Vocabulary) -> Checker:
        """Build the checker; a constraint with a mask engine returns its own subclass."""
        return Checker(self, vocab)

    def accepts_prefix(self, text: str | bytes) -> bool:
        """Whether ``text`` may still be extended to a valid text."""
        return self.advance(self.start(), as_bytes(text)) is not DEAD

    def accepts(self, text: str | bytes) -> bool:
        """Whether ``text`` is valid as a whole."""
        state = self.advance(self.start(), as_bytes(text))
        return state is not DEAD and self.is_complete(state)

    def describe(self) -> str:
        """A short human-readable description, for messages."""
        return type(self).__name__

    def __and__(self, other: Constraint) -> Constraint:
        """``a & b``: texts both accept (see :class:`All`)."""
        return All(self, other)

    def scored(self, score: Score) -> Constraint:
        """This constraint with a soft score ``(text, finished) -> log weight`` for SMC."""
        return Scored(self, score)


CONTINUATION_BYTES: Final = frozenset(range(0x80, 0xC0))
"""Bytes that may follow an unfinished UTF-8 character."""


def split_utf8(data: bytes) -> tuple[str, bytes] | None:
    """Split bytes into their decodable text and an unfinished trailing UTF-8 sequence.

    Returns None when ``data`` holds bytes that no continuation can turn into valid UTF-8.
    A token may end in the middle of a multi-byte character; the rest arrives with the next
    token, so the unfinished tail (at most 3 bytes) is kept, not rejected.
    """
    try:
        return data.decode("utf-8"), b""
    except UnicodeDecodeError as err:
        if err.reason != "unexpected end of data":
            return None
        head, tail = data[: err.start], data[err.start :]
        return head.decode("utf-8"), tail


# --- combining constraints -------------------------------------------------------------

Score = Callable[[str, bool], float]


class All(Constraint):
    """Texts accepted by every one of ``constraints``."""

    def __init__(self, *constraints: Constraint) -> None:
        flat: list[Constraint] = []
        for c in constraints:
            if not isinstance(c, Constraint):
                raise ConfigError(f"All() takes constraints, got {type(c).__name__}")
            flat.extend(c.parts if isinstance(c, All) else [c])
        if not flat:
            raise ConfigError("All() needs at least one constraint")
        self.parts: tuple[Constraint, ...] = tuple(flat)

    @property
    def timeouts(self) -> int:
        return sum(getattr(c, "timeouts", 0) for c in self.parts)

    def describe(self) -> str:
        return " and ".join(c.describe() for c in self.parts)

    def __repr__(self) -> str:
        return "All(" + ", ".join(map(repr, self.parts)) + ")"

    def start(self) -> tuple:
        return tuple(c.start() for c in self.parts)

    def advance(self, state: State, data: bytes) -> State:
        out = []
        for c, s in zip(self.parts, state):
            s = c.advance(s, data)
            if s is DEAD:
                return DEAD
            out.append(s)
        return tuple(out)

    def is_complete(self, state: State) -> bool:
        return all(c.is_complete(s) for c, s in zip(self.parts, state))

    def min_completion_bytes(self, state: State) -> int:
        return max(c.min_completion_bytes(s) for c, s in zip(self.parts, state))

    def lookahead_log_psi(self, state: State) -> float:
        return sum(c.lookahead_log_psi(s) for c, s in zip(self.parts, state))

    def next_bytes(self, state: State) -> frozenset[int] | None:
        allowed: frozenset[int] | None = None
        for c, s in zip(self.parts, state):
            mine = c.next_bytes(s)
            if mine is not None:
                allowed = mine if allowed is None else allowed & mine
        return allowed

    def _checker(self, vocab: Vocabulary) -> Checker:
        return AllChecker(self, vocab)

    @property
    def critic(self) -> Score | None:
        scores = [c.critic for c in self.parts if getattr(c, "critic", None) is not None]
        if not scores:
            return None
        return lambda text, finished: sum(score(text, finished) for score in scores)


class Scored(Constraint):
    """A constraint with a soft score that SMC applies as a critic."""

    def __init__(self, constraint: Constraint, score: Score) -> None:
        if not callable(score):
            raise ConfigError("score must be a function (text, finished) -> log weight")
        self.base = constraint
        self.score: Score = score

    @property
    def critic(self) -> Score:
        """This score plus any the wrapped constraint carries (``a.scored(f) & b`` wrapped again)."""
        inner = getattr(self.base, "critic", None)
        if inner is None:
            return self.score
        score = self.score
        return lambda text, finished: score(text, finished) + inner(text, finished)

    def describe(self) -> str:
        return f"{self.base.describe()} (scored)"

    def start(self) -> State:
        return self.base.start()

    def advance(self, state: State, data: bytes) -> State:
        return self.base.advance(state, data)

    def is_complete(self, state: State) -> bool:
        return self.base.is_complete(state)

    def next_bytes(self, state: State) -> frozenset[int] | None:
        return self.base.next_bytes(state)

    def min_completion_bytes(self, state: State) -> int:
        return self.base.min_completion_bytes(state)

    def lookahead_log_psi(self, state: State) -> float:
        return self.base.lookahead_log_psi(state)

    def _checker(self, vocab: Vocabulary) -> Checker:
        return self.base.compile(vocab)  # the score is SMC's business, not the checker's

    @property
    def timeouts(self) -> int:
        return getattr(self.base, "timeouts", 0)


class AllChecker(Checker):
    """Every part's checker; hints and masks are intersections, exact when every part's is."""

    def __init__(self, constraint: All, vocab: Vocabulary) -> None:
        super().__init__(constraint, vocab)
        self.parts = tuple(c.compile(vocab) for c in constraint.parts)
        self.cheap_checks = any(c.cheap_checks for c in self.parts)
        self.exact_masks = all(c.exact_masks for c in self.parts)
        costs = [c.mask_cost for c in self.parts if c.mask_cost != math.inf]
        self.mask_cost = sum(costs) if costs else math.inf

    def accepts_token(self, state: State, token: int) -> bool:
        return all(c.accepts_token(s, token) for c, s in zip(self.parts, state))

    def candidate_tokens(self, state: State) -> np.ndarray | None:
        return _intersection([c.candidate_tokens(s) for c, s in zip(self.parts, state)], unique=False)

    def token_mask(self, state: State) -> np.ndarray | None:
        return _intersection([c.token_mask(s) for c, s in zip(self.parts, state)], unique=True)

    def mask_key(self, state: State) -> Hashable | None:
        keys = tuple(c.mask_key(s) for c, s in zip(self.parts, state))
        return None if any(k is None for k in keys) else keys


def _intersection(sets: list, *, unique: bool) -> np.ndarray | None:
    """The token ids every part allows (a part's None allows all; all None: None)."""
    kept: np.ndarray | None = None
    for mine in sets:
        if mine is not None:
            mine = np.asarray(mine, dtype=np.int64)
            kept = mine if kept is None else np.intersect1d(kept, mine, assume_unique=unique)
    return kept
