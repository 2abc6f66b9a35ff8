"""JsonSchema's hint: which bytes may come next after a state (see ``Constraint.next_bytes``).

Exact where it is cheap to be (inside literals, numbers, escapes, after a complete value: the
bytes that close a container or continue it), conservative elsewhere (None: any byte). Inside
strings with ``enum``/``const`` or declared property names it narrows to the bytes that
continue one of them.

Not here: the lexer and its states (``lexer.py``).
"""

from __future__ import annotations

import bisect
from typing import Protocol

from ..base import CONTINUATION_BYTES, DEAD, State
from .values import (
    EMPTY,
    ESCAPE_BYTES,
    FIRST_KIND,
    HEX,
    K_OBJ,
    M_AFTER,
    M_ARR_FIRST,
    M_COLON,
    M_DONE,
    M_KEY,
    M_KEYSTR,
    M_LITERAL,
    M_NUMBER,
    M_OBJ_FIRST,
    M_STRING,
    M_VALUE,
    N_FINAL,
    NUMBER_NEXT,
    T_ARR,
    WS,
)


class Lexer(Protocol):
    """What the hint reads of a JsonSchema: its whitespace policy and the always-true branch."""

    free_whitespace: bool
    max_whitespace: int
    true_alts: tuple


def next_bytes(schema: Lexer, state: State) -> frozenset[int] | None:
    """The bytes a valid continuation of ``state`` may start with (None: any). See JsonSchema."""
    if state is DEAD:
        return frozenset()
    mode, sub, syn, threads = state[0], state[1], state[2], state[3]
    space = WS if schema.free_whitespace and state[6] < schema.max_whitespace else EMPTY
    if mode == M_DONE:
        return space
    if mode == M_STRING or mode == M_KEYSTR:
        chars, esc, tail, high = sub
        if tail:
            return CONTINUATION_BYTES
        if esc == "\\":
            return ESCAPE_BYTES
        if esc:
            return HEX
        if high or threads is None:
            return None
        if mode == M_KEYSTR:
            return _key_next_bytes(threads, chars)
        return _string_next_bytes(threads, chars)
    if mode == M_NUMBER:
        allowed = NUMBER_NEXT[sub[1]]
        if sub[1] in N_FINAL:
            if syn is None:
                return allowed | space
            parents = None if threads is None else [t[3] for t in threads]
            return allowed | _container_hint(parents, syn[0] == K_OBJ, False, space, 1)
        return allowed
    if mode == M_LITERAL:
        return frozenset((sub[0][0],))
    if mode == M_VALUE or mode == M_ARR_FIRST:
        allowed = set(space)
        if threads is None:
            allowed.update(FIRST_KIND)
            if mode == M_ARR_FIRST:
                allowed.add(0x5D)
            return frozenset(allowed)
        for t in threads:
            if t[0] == T_ARR:
                alt = t[1]
                index = t[2][0]
                if mode == M_ARR_FIRST and alt.imin == 0:
                    allowed.add(0x5D)
                if alt.imax is not None and index >= alt.imax:
                    continue
                for k in alt.item_alts(index) if alt.arr_atoms else schema.true_alts:
                    allowed |= k.first_bytes
            else:
                allowed |= t[1].first_bytes
        return frozenset(allowed)
    if mode == M_COLON:
        return frozenset({0x3A}) | space
    if mode == M_KEY:
        return frozenset({0x22}) | space
    if mode == M_OBJ_FIRST or mode == M_AFTER:
        return _container_hint(threads, syn[0] == K_OBJ, mode == M_OBJ_FIRST, space)
    return None


def _container_hint(
    frames, is_object: bool, first: bool, space: frozenset, pending: int = 0
) -> frozenset[int]:
    """Bytes after '{' (``first``) or after a value inside a container: close, comma or key.

    ``pending`` is 1 while the last array item (a number) is not yet counted in its frame.
    """
    allowed = set(space)
    if frames is None:
        if first:
            allowed.update(b'"}')
        else:
            allowed.update(b",}" if is_object else b",]")
        return frozenset(allowed)
    more = 0x22 if first else 0x2C
    for t in frames:
        alt, info = t[1], t[2]
        if is_object:
            if alt.obj_close_ok(info):
                allowed.add(0x7D)
            if alt.pmax is None or len(info) < alt.pmax:
                allowed.add(more)
        else:
            count = info[0] + pending
            if count >= alt.imin:
                allowed.add(0x5D)
            if alt.imax is None or count < alt.imax:
                allowed.add(0x2C)
    return frozenset(allowed)


def _json_first_byte(ch: str) -> int:
    if ch == '"' or ch == "\\" or ord(ch) < 0x20:
        return 0x5C
    return ch.encode("utf-8", "surrogatepass")[0]


def _candidates_next(names, text: str, seen) -> set[int] | None:
    allowed: set[int] = set()
    i = bisect.bisect_left(names, text)
    n = len(text)
    while i < len(names) and names[i].startswith(text):
        name = names[i]
        i += 1
        if seen is not None and name in seen:
            continue
        if len(name) == n:
            allowed.add(0x22)
        else:
            allowed.add(_json_first_byte(name[n]))
            allowed.add(0x5C)  # any character may be written as an escape
    return allowed


def _key_next_bytes(threads, text: str) -> frozenset[int] | None:
    allowed: set[int] = set()
    for t in threads:
        atoms = t[1].restricted_atoms
        if not atoms or atoms[0].pprops:
            return None
        allowed |= _candidates_next(atoms[0].names, text, t[2])
    return frozenset(allowed)


#: bytes a character of a JSON string may start with: no control characters (RFC 8259)
STRING_NEXT = frozenset(range(0x20, 0x100))


def _string_next_bytes(threads, text: str) -> frozenset[int]:
    """Inside a string: the bytes continuing an ``enum``/``const``, only the closing quote once
    ``maxLength`` characters are written, and otherwise no control character."""
    allowed: set[int] = set()
    for t in threads:
        alt = t[1]
        if alt.str_enums:
            allowed |= _candidates_next(alt.str_enums[0], text, None)
        elif alt.smax is not None and len(text) >= alt.smax:
            allowed.add(0x22)
        else:
            return STRING_NEXT
    return frozenset(allowed)
