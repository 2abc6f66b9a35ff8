"""Predicate: a constraint written as Python functions over the decoded text.

``prefix_ok(text)`` must return False only when *no* continuation of ``text`` can be valid;
``complete_ok(text)`` says whether ``text`` is valid as a whole (default: ``prefix_ok``).
Texts are passed as ``str``; a character split across tokens is passed once it is whole.

Not here: memoisation. The functions are called once per distinct candidate, and AWRS calls
them for a handful of candidates per token.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError, ConstraintError
from .base import CONTINUATION_BYTES, DEAD, Constraint, State, split_utf8

PredicateState = tuple[str, bytes]


class Predicate(Constraint):
    """Texts accepted by user functions.

    Args:
        prefix_ok: ``str -> bool``; False means the text can never be completed.
        complete_ok: ``str -> bool``; whether a finished text is valid. Defaults to ``prefix_ok``.
        name: shown in messages.
    """

    def __init__(
        self,
        prefix_ok: Callable[[str], bool],
        complete_ok: Callable[[str], bool] | None = None,
        *,
        name: str | None = None,
    ) -> None:
        if not callable(prefix_ok):
            raise ConfigError("prefix_ok must be a function str -> bool")
        if complete_ok is not None and not callable(complete_ok):
            raise ConfigError("complete_ok must be a function str -> bool or None")
        self.prefix_ok = prefix_ok
        self.complete_ok = complete_ok if complete_ok is not None else prefix_ok
        self.name = name or getattr(prefix_ok, "__name__", "predicate")

    def describe(self) -> str:
        return f"predicate {self.name}"

    def _call(self, fn: Callable[[str], bool], text: str) -> bool:
        try:
            return bool(fn(text))
        except Exception as err:  # a user function failing is reported, not swallowed
            raise ConstraintError(
                f"{self.describe()} raised {type(err).__name__}: {err} (on text {text[:80]!r})"
            ) from err

    def start(self) -> PredicateState:
        return ("", b"")

    def advance(self, state: State, data: bytes) -> State:
        text, tail = state
        split = split_utf8(tail + data)
        if split is None:
            return DEAD
        new_chars, new_tail = split
        if not new_chars:
            return (text, new_tail)
        text = text + new_chars
        return (text, new_tail) if self._call(self.prefix_ok, text) else DEAD

    def next_bytes(self, state: State) -> frozenset[int] | None:
        return CONTINUATION_BYTES if state[1] else None

    def is_complete(self, state: State) -> bool:
        text, tail = state
        return not tail and self._call(self.complete_ok, text)
