"""The live branches of a JSON Schema while its text is read.

A branch (a *thread*) is one way the text so far may still be valid: a linked stack of frames
``(tag, alternative, progress, parent)``, one per open value, where an alternative is a
compiled schema node (:mod:`.nodes`) and its progress is what the schema needs to know
(property names seen, the array index, the items seen under ``uniqueItems``). The lexer
(:mod:`.lexer`) reports events -- a value starts, a key ends, a scalar ends, a container
closes -- and each event keeps the branches that allow it. No branch left: the text is dead.
Above MAX_THREADS branches pruning stops (threads become None); the end still validates.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

from ..base import DEAD
from .values import EMPTY, K_ARR, K_NUM, K_OBJ, K_STR, M_AFTER, M_DONE, T_ARR, T_OBJ, T_VAL, canon

MAX_THREADS = 512


class Branches:
    """Events on the tuple of live branches; pure functions of their arguments."""

    def __init__(self, true_alts: tuple, run_checks: Callable, validate_root: Callable[[Any, Callable], bool]) -> None:
        self.true_alts = true_alts
        self.run_checks = run_checks
        self.validate_root = validate_root

    # --- events of the lexer --------------------------------------------------------------------

    @staticmethod
    def limit(new: list) -> tuple | None:
        if len(new) > 1:
            new = list(dict.fromkeys(new))
            if len(new) > MAX_THREADS:
                return None  # permissive from here on; the document is still validated at the end
        return tuple(new)

    def start_value(self, threads, kind):
        if threads is None:
            return None
        new = []
        for t in threads:
            if t[0] == T_ARR:
                alt = t[1]
                index = t[2][0]
                if alt.imax is not None and index >= alt.imax:
                    continue
                kids = alt.item_alts(index) if alt.arr_atoms else self.true_alts
                parent = t
            else:
                kids = (t[1],)
                parent = t[3]
            for k in kids:
                if k.kmask & kind:
                    if kind == K_OBJ:
                        new.append((T_OBJ, k, EMPTY, parent))
                    elif kind == K_ARR:
                        new.append((T_ARR, k, (0, EMPTY if k.unique else None), parent))
                    else:
                        new.append((T_VAL, k, None, parent))
        return self.limit(new) if new else DEAD

    @staticmethod
    def comma(threads):
        """A comma promises one more item or property: drop threads at maxItems/maxProperties."""
        new = []
        for t in threads:
            alt = t[1]
            if t[0] == T_ARR:
                if alt.imax is None or t[2][0] < alt.imax:
                    new.append(t)
            elif alt.pmax is None or len(t[2]) < alt.pmax:
                new.append(t)
        return tuple(new) if new else DEAD

    def start_key(self, threads):
        if threads is None:
            return None
        new = tuple(t for t in threads if t[1].pmax is None or len(t[2]) < t[1].pmax)
        return new if new else DEAD

    def key_done(self, threads, key: str):
        if threads is None:
            return None
        new = []
        true_alts = self.true_alts
        for t in threads:
            _, alt, seen, parent = t
            if key in seen:
                continue
            if alt.has_pnames and not alt.key_ok(key):
                continue
            kids = alt.child_alts(key) if alt.obj_atoms else true_alts
            if not kids:
                continue
            frame = (T_OBJ, alt, seen | {key}, parent)
            for k in kids:
                new.append((T_VAL, k, None, frame))
        return self.limit(new) if new else DEAD

    def scalar_done(self, threads, syn, kind, value, root_key):
        """A string, number or literal just ended: check it on every thread; at the top level
        (no open container) validate the whole document. The new (mode, threads), or DEAD."""
        threads = self.end_scalar(threads, kind, value)
        if threads is DEAD:
            return DEAD
        if syn is not None:
            return M_AFTER, threads
        if not self.validate_root(root_key, lambda: value):
            return DEAD
        return M_DONE, ()

    def end_scalar(self, threads, kind, value):
        """Check a completed string, number or literal on every thread, then pop its frame."""
        if threads is None:
            return None
        run_checks = self.run_checks
        kept = []
        for t in threads:
            alt = t[1]
            if kind == K_STR:
                if not alt.str_ok(value):
                    continue
            elif kind == K_NUM:
                if not alt.num_ok(value):
                    continue
            elif alt.enum_sets and not alt.value_ok(value):
                continue
            if alt.checks and t[3] is not None and not run_checks(alt.checks, value):
                continue
            kept.append(t)
        if not kept:
            return DEAD
        return self.pop(kept, lambda: value)

    def pop(self, threads: list, value_of):
        """Return to the parent frames after a value completed (array index, uniqueItems)."""
        if threads[0][3] is None:  # the top-level value: every thread is at the root
            return ()
        key = None
        new = []
        for t in threads:
            parent = t[3]
            if parent[0] == T_ARR:
                index, unique = parent[2]
                if unique is not None:
                    if key is None:
                        key = canon(value_of())
                    if key in unique:
                        continue
                    unique = unique | {key}
                new.append((T_ARR, parent[1], (index + 1, unique), parent[3]))
            else:
                new.append(parent)
        if not new:
            return DEAD
        return self.limit(new)

    def close(self, kind, syn, threads, rope, data, pos, i):
        """Close the innermost container at byte ``i`` of ``data``: (mode, sub, syn, threads)."""
        start = syn[1]
        cached: list = []

        def value_of():
            if not cached:
                cached.append(json.loads(_slice(rope, data, start, pos, i + 1).decode("utf-8")))
            return cached[0]

        if threads is not None:
            run_checks = self.run_checks
            kept = []
            for t in threads:
                _, alt, info, parent = t
                if kind == K_OBJ:
                    if not alt.obj_close_ok(info):
                        continue
                elif info[0] < alt.imin:
                    continue
                if alt.needs_value:
                    try:
                        value = value_of()
                    except (ValueError, RecursionError):
                        return DEAD
                    if alt.enum_sets and not alt.value_ok(value):
                        continue
                    if alt.checks and parent is not None and not run_checks(alt.checks, value):
                        continue
                kept.append(t)
            if not kept:
                return DEAD
            threads = self.pop(kept, value_of)
            if threads is DEAD:
                return DEAD
        parent = syn[3]
        if parent is None:
            text = _slice(rope, data, 0, pos, i + 1)
            if not self.validate_root(text, lambda: json.loads(text.decode("utf-8"))):
                return DEAD
            return (M_DONE, None, None, ())
        return (M_AFTER, None, parent, threads)

    # --- prefix checks at the end of an advance --------------------------------------------

    def string_prefix(self, threads, sub):
        chars, esc, _, high = sub
        text = chars[:-1] if high else chars  # a high surrogate may still pair with the next escape
        count = len(chars)

        def alive(t, text, count):
            return t[1].str_prefix_trivial or t[1].str_prefix_ok(text, count)

        span = None if high else escape_span(esc)
        if span is None:
            new = tuple(t for t in threads if alive(t, text, count))
        else:  # inside an escape: some character it may still write must keep the string alive
            new = tuple(t for t in threads if some_char_fits(span, lambda c, t=t: alive(t, text + c, count + 1),
                                                             any_char=t[1].str_prefix_length_only))
        return new if new else DEAD

    def key_prefix(self, threads, sub):
        chars, esc, _, high = sub
        text = chars[:-1] if high else chars

        def alive(t, text):
            return not (t[1].restricted_atoms or t[1].has_pnames) or t[1].key_prefix_ok(text, t[2])

        span = None if high else escape_span(esc)
        if span is None:
            new = tuple(t for t in threads if alive(t, text))
        else:
            new = tuple(t for t in threads if some_char_fits(span, lambda c, t=t: alive(t, text + c)))
        return new if new else DEAD

    def number_prefix(self, threads, sub):
        text, nstate = sub
        new = tuple(t for t in threads if t[1].num_prefix_trivial or t[1].num_prefix_ok(text, nstate))
        return new if new else DEAD


# Characters tried first for an unfinished escape, then the rest of its range.
_LIKELY_CHARS = tuple(range(0x20, 0x7F))
_LIKELY_SET = frozenset(_LIKELY_CHARS)


def escape_span(esc: str) -> tuple[int, int] | None:
    """The code points an unfinished escape may still write (None outside one): after a
    backslash any (``\\uXXXX``), after ``\\u`` and k hex digits the 16^(4-k) that share them."""
    if not esc:
        return None
    digits = esc[1:]  # esc is "\\" or "u" followed by the hex digits read so far
    width = 4 * (4 - len(digits))
    low = int(digits, 16) << width if digits else 0
    return low, low + (1 << width) - 1


def some_char_fits(span: tuple[int, int], fits, *, any_char: bool = False) -> bool:
    """Whether ``fits(c)`` holds for some character c in ``span``, likely characters first.

    Surrogates are not tried: a span of only surrogates counts as fitting (they pair with a
    later escape). A span is at most 65,536 characters; a dead one is scanned whole (up to
    ~0.4 s for a regex), which happens only where the text could not be finished anyway,
    instead of leaving a prefix no token can continue. ``any_char``: ``fits`` does not depend
    on the character (only a length limit applies), so one character answers for all (a
    whole scan at a length limit cost ~12 ms, and a model that likes escapes pays it often).
    """
    low, high = span
    likely = [c for c in _LIKELY_CHARS if low <= c <= high]
    rest = (c for c in range(low, high + 1) if not (c in _LIKELY_SET or 0xD800 <= c <= 0xDFFF))
    tried = 0
    for cp in itertools.chain(likely, rest):
        if fits(chr(cp)):
            return True
        tried += 1
        if any_char:
            return False
    return tried == 0


def _slice(rope, data: bytes, start: int, pos: int, end: int) -> bytes:
    """Bytes ``start:`` of the text: the rope (earlier advances) then ``data[:end]``."""
    if start >= pos:
        return data[start - pos : end]
    chunks = [data[:end]]
    node = rope
    while node is not None:
        prev, chunk, chunk_start = node
        if chunk_start <= start:
            chunks.append(chunk[start - chunk_start :])
            break
        chunks.append(chunk)
        node = prev
    chunks.reverse()
    return b"".join(chunks)
