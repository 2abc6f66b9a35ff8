"""Regex: texts that fully match a pattern of the `regex` package.

Two engines, one semantics (full match):

* **automaton** (chosen automatically when the pattern allows it): a pattern without
  lookarounds, backreferences, anchors inside it, case-insensitive matching or `regex`-only
  syntax, with no flags, is parsed with Python ``re``'s parser (character classes ``\\d \\s
  \\w`` as the `regex` package defines them) and compiled into a DFA over UTF-8 bytes
  (:mod:`awrs.constraints.regex.automaton`). A check is one table lookup per byte; a prefix is alive
  exactly when it can still be completed; and the constraint offers exact whole-vocabulary
  token masks, cached per automaton state (``exact_masks``). A leading ``^`` and a trailing
  ``$`` are dropped: under full matching they change nothing.
* **backtracking**: the whole syntax of `regex` (lookarounds, backreferences, conditionals,
  recursion, Unicode properties, set operations); prefixes are checked with the engine's own
  partial matching: a prefix is alive when ``fullmatch(text, partial=True)`` finds a match
  that could still be extended. That partial matching is loose after a lookaround, so a
  pattern with lookarounds is also checked without them (:mod:`~awrs.constraints.regex.relaxed`:
  a necessary condition). Every check has a time limit, so a pattern with catastrophic
  backtracking cannot hang a run. A prefix check that times out is treated as alive
  (accepting is always safe for exactness; the text is checked again later); a completion
  check that times out is treated as invalid and counted in :attr:`Regex.timeouts`.

``Regex(pattern, engine="backtracking")`` forces the second; ``engine="automaton"`` raises
:class:`~awrs.errors.ConfigError` when the pattern cannot be compiled to an automaton.
"""

from __future__ import annotations

import re
import warnings
from typing import TYPE_CHECKING

import regex as _regex

from ...errors import ConfigError
from ..base import CONTINUATION_BYTES, DEAD, Constraint, State, split_utf8
from ..checker import Checker
from .automaton import AutomatonChecker, AutomatonTooLarge, ByteAutomaton
from .dfa import RegexUnsupported, compile_regex
from .relaxed import relaxed_pattern

if TYPE_CHECKING:
    from ...vocab import Vocabulary

ENGINES = ("auto", "automaton", "backtracking")
# Bounds on the automaton, so that a huge pattern falls back to backtracking within a second or
# two instead of building for long (e.g. \w{500}: 501 character states, >50,000 byte states).
MAX_CHARACTER_STATES = 4_096
MAX_REPEAT = 1_000
MAX_BYTE_STATES = 50_000
# A mask walks the vocabulary's byte trie: ~1 ms at 49k tokens, about as much as a few hundred
# checks, but it makes the weight exact, so it is priced low (see Checker.mask_cost).
AUTOMATON_MASK_COST = 32.0

PROBE_LIMIT = 4097  # unfinished characters with fewer completions are probed one by one (~15 ms at most)
PROBE_CACHE_SIZE = 4096

# State: (decoded text so far, unfinished trailing UTF-8 bytes). Immutable and shareable.
RegexState = tuple[str, bytes]


class Regex(Constraint):
    """Texts that fully match ``pattern``.

    Args:
        pattern: a pattern in the syntax of the `regex` package.
        flags: `regex` flags (for example ``regex.IGNORECASE``).
        timeout: seconds allowed for one check before it is abandoned (backtracking engine).
        engine: ``"auto"`` (the automaton when the pattern allows it), ``"automaton"`` or
            ``"backtracking"`` (see the module docstring).
    """

    def __init__(self, pattern: str, flags: int = 0, *, timeout: float = 0.05, engine: str = "auto") -> None:
        if not isinstance(pattern, str):
            raise ConfigError(f"a regex pattern must be a string, got {type(pattern).__name__}")
        if timeout <= 0:
            raise ConfigError(f"timeout must be positive, got {timeout}")
        if engine not in ENGINES:
            raise ConfigError(f"unknown regex engine {engine!r}; choose one of {', '.join(ENGINES)}")
        try:
            self._compiled = _regex.compile(pattern, flags)
        except _regex.error as err:
            where = f" at position {err.pos}" if getattr(err, "pos", None) is not None else ""
            raise ConfigError(f"invalid regex {pattern!r}: {err.msg}{where}") from None
        except (OverflowError, RecursionError, MemoryError) as err:
            raise ConfigError(f"invalid regex {pattern!r}: {type(err).__name__}") from None
        self._extendable = _extension_pattern(pattern, flags)
        self._relaxed = None
        self._probe_cache: dict[tuple[str, int, int], bool] = {}
        self.pattern = pattern
        self.timeout = timeout
        self.timeouts = 0  # checks abandoned at the time limit (see module docstring)
        self._automaton: ByteAutomaton | None = None
        if engine != "backtracking":
            automaton, why = _automaton(pattern, flags)
            if automaton is None and engine == "automaton":
                raise ConfigError(f"regex {pattern!r} cannot be compiled to an automaton: {why}")
            self._automaton = automaton
        if self._automaton is None:
            self._relaxed = relaxed_pattern(pattern, flags)

    @property
    def engine(self) -> str:
        return "automaton" if self._automaton is not None else "backtracking"

    def describe(self) -> str:
        return f"regex {self.pattern!r}"

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r})"

    def start(self) -> State:
        return 0 if self._automaton is not None else ("", b"")

    def _match(self, text: str, partial: bool, compiled=None):
        try:
            return (compiled or self._compiled).fullmatch(text, partial=partial, timeout=self.timeout)
        except TimeoutError:
            self.timeouts += 1
            raise

    def advance(self, state: State, data: bytes) -> State:
        if self._automaton is not None:
            after = self._automaton.advance(state, data)
            return DEAD if after < 0 else after
        text, tail = state
        split = split_utf8(tail + data)
        if split is None:
            return DEAD
        new_chars, new_tail = split
        if not new_chars and not new_tail:
            return state
        text = text + new_chars
        try:
            if self._relaxed is not None and self._match(text, partial=True, compiled=self._relaxed) is None:
                return DEAD
            if new_tail:
                alive = self._may_continue_with(text, new_tail)
            else:
                alive = self._match(text, partial=True) is not None
        except TimeoutError:
            return (text, new_tail)
        return (text, new_tail) if alive else DEAD

    def _may_continue_with(self, text: str, tail: bytes) -> bool:
        """Whether ``text`` followed by some character that starts with ``tail`` can be valid.

        When the unfinished character has at most 4,096 possible values (every case but a lone
        4-byte lead byte), each is tried in code-point order until one fits, and the answer
        is cached per text and range; otherwise it is enough that some character may follow.
        """
        low, high = utf8_completions(tail)
        if high - low >= PROBE_LIMIT:
            extendable = self._extendable or self._compiled
            return self._match(text, partial=True, compiled=extendable) is not None
        key = (text, low, high)
        known = self._probe_cache.get(key)
        if known is None:
            known = any(
                self._match(text + chr(c), partial=True) is not None
                for c in range(low, high + 1)
                if not 0xD800 <= c <= 0xDFFF
            )
            if len(self._probe_cache) >= PROBE_CACHE_SIZE:
                self._probe_cache.clear()
            self._probe_cache[key] = known
        return known

    def next_bytes(self, state: State) -> frozenset[int] | None:
        if self._automaton is not None:
            return self._automaton.next_bytes(state)
        text, tail = state
        if tail:
            return CONTINUATION_BYTES
        if self._extendable is None:
            return None
        try:
            extendable = self._match(text, partial=True, compiled=self._extendable) is not None
        except TimeoutError:
            return None
        return None if extendable else frozenset()

    def min_completion_bytes(self, state: State) -> int:
        if self._automaton is not None:
            return self._automaton.min_completion_bytes(state)
        return len(state[1]) and 1  # an unfinished UTF-8 character needs at least one more byte

    def is_complete(self, state: State) -> bool:
        if self._automaton is not None:
            return self._automaton.is_accepting(state)
        text, tail = state
        if tail:
            return False
        try:
            match = self._match(text, partial=False)
        except TimeoutError:
            return False
        return match is not None


    def _checker(self, vocab: Vocabulary) -> Checker:
        if self._automaton is None:
            return Checker(self, vocab)
        return AutomatonChecker(self, vocab, self._automaton, AUTOMATON_MASK_COST)


def _automaton(pattern: str, flags: int) -> tuple[ByteAutomaton | None, str]:
    """The byte automaton of ``pattern``, or None and the reason it cannot have one."""
    if flags:
        return None, "flags are only supported by the backtracking engine"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # re's "possible nested set" etc.: semantics differ
            dfa = compile_regex(
                pattern, full_match=True, regex_package=True, max_states=MAX_CHARACTER_STATES,
                max_repeat=MAX_REPEAT,
            )
        return ByteAutomaton(dfa, MAX_BYTE_STATES), ""
    except (RegexUnsupported, AutomatonTooLarge) as err:
        return None, str(err)
    except (re.error, Warning, RecursionError, OverflowError, MemoryError) as err:
        return None, f"{type(err).__name__}: {err}"


# Patterns that recurse into the whole pattern cannot be wrapped without changing their meaning.
_WHOLE_RECURSION = _regex.compile(r"\(\?(?:R|0)\)")


def _extension_pattern(pattern: str, flags: int):
    """A pattern that partially matches a text only if the text can be extended by a character.

    ``(?:P)(?!)`` can never match in full, so a partial match means some way through P reached
    the end of the text still wanting input. Used when a token ends inside a multi-byte
    character: if the text before it is already a complete, final match (a full date, say),
    no character can follow and the pending bytes are rejected at once instead of leaving the
    particle to die a step later. None where wrapping would change the pattern's meaning.
    """
    if _WHOLE_RECURSION.search(pattern):
        return None
    try:
        return _regex.compile(f"(?:{pattern})(?!)", flags)
    except _regex.error:
        return None


def utf8_completions(tail: bytes) -> tuple[int, int]:
    """The smallest and largest code point a valid unfinished UTF-8 sequence can become."""
    lead = tail[0]
    if lead >= 0xF0:
        length, payload, smallest = 4, lead & 0x07, 0x10000
    elif lead >= 0xE0:
        length, payload, smallest = 3, lead & 0x0F, 0x800
    else:
        length, payload, smallest = 2, lead & 0x1F, 0x80
    for byte in tail[1:]:
        payload = (payload << 6) | (byte & 0x3F)
    missing = 6 * (length - len(tail))
    low = payload << missing
    high = low | ((1 << missing) - 1)
    return max(low, smallest), min(high, 0x10FFFF)
