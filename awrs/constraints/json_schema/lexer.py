"""The JSON lexer of :class:`~awrs.constraints.json_schema.JsonSchema`: bytes in, state out.

One function per lexer mode reads bytes from a position and returns where it stopped (or
:data:`STOP` when the text is dead); :func:`advance` runs them until the bytes are used up,
then checks the unfinished value once (not per byte). Syntax is the lexer's; whether a value
may stand where it stands is asked of the live branches (:mod:`.branches`), which carry the
compiled schema.

States are :class:`JsonState` tuples, never mutated, shared freely between particles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from ..base import DEAD, State, split_utf8
from .values import (
    DIGITS,
    ESCAPES,
    FIRST_KIND,
    FRESH_STRING,
    HEX,
    K_ARR,
    K_NUM,
    K_OBJ,
    K_STR,
    LITERALS,
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
    N_DOT,
    N_E,
    N_ESIGN,
    N_EXP,
    N_FINAL,
    N_FRAC,
    N_INT,
    N_MINUS,
    N_ZERO,
    RUN,
    WS,
)

if TYPE_CHECKING:
    from .branches import Branches

MAX_DEPTH = 64
STOP = -1  # returned by a mode's reader: the text is dead


class JsonState(NamedTuple):
    """Where the lexer is after some bytes."""

    mode: int  # M_*: what the next byte may be
    sub: Any  # the mode's progress: string (chars, escape, utf-8 tail, high surrogate),
    #           number (text, N_* state), literal (bytes still to come, kind)
    syn: tuple | None  # the open containers, innermost first: (kind, start, depth, parent)
    threads: tuple | None  # live branches of the schema (None: no pruning, see MAX_THREADS)
    rope: tuple | None  # the bytes so far, as (earlier rope, data, its position)
    pos: int  # bytes so far
    ws: int  # the current whitespace run


class _Lexer:
    """The mutable working copy of a state during one advance."""

    __slots__ = ("branches", "data", "free", "max_ws", "mode", "pos", "rope", "sub", "syn", "threads", "ws")

    def __init__(self, state: JsonState, data: bytes, branches: Branches, free: bool, max_ws: int) -> None:
        self.mode, self.sub, self.syn, self.threads, self.rope, self.pos, self.ws = state
        self.branches = branches
        self.data = data
        self.free = free
        self.max_ws = max_ws

    def scalar_done(self, kind: int, value: Any, root_key: Any) -> bool:
        ended = self.branches.scalar_done(self.threads, self.syn, kind, value, root_key)
        if ended is DEAD:
            return False
        self.mode, self.threads = ended
        self.sub = None
        return True

    def close(self, kind: int, i: int) -> bool:
        closed = self.branches.close(kind, self.syn, self.threads, self.rope, self.data, self.pos, i)
        if closed is DEAD:
            return False
        self.mode, self.sub, self.syn, self.threads = closed
        return True


def advance(state: JsonState, data: bytes, branches: Branches, free: bool, max_ws: int) -> State:
    """The state after ``data``, or DEAD."""
    lx = _Lexer(state, data, branches, free, max_ws)
    n = len(data)
    i = 0
    while i < n:
        i = _READERS[lx.mode](lx, i)
        if i == STOP:
            return DEAD
    threads = lx.threads
    if threads:  # prefix checks on the unfinished value
        mode = lx.mode
        if mode == M_STRING:
            threads = branches.string_prefix(threads, lx.sub)
        elif mode == M_KEYSTR:
            threads = branches.key_prefix(threads, lx.sub)
        elif mode == M_KEY:  # after a comma a name must follow: some name must be left
            threads = branches.key_prefix(threads, FRESH_STRING)
        elif mode == M_NUMBER:
            threads = branches.number_prefix(threads, lx.sub)
        if threads is DEAD:
            return DEAD
    return JsonState(lx.mode, lx.sub, lx.syn, threads, (lx.rope, data, lx.pos), lx.pos + n, lx.ws)


# --- strings and property names ------------------------------------------------------------


def _string(lx: _Lexer, i: int) -> int:
    chars, esc, tail, high = lx.sub
    data = lx.data
    if esc:
        return _escape(lx, data[i], i)
    m = RUN(data, i)
    if m is not None:  # a run of plain characters
        j = m.end()
        piece = data[i:j]
        if tail:
            piece = tail + piece
        try:
            text, tail = piece.decode("utf-8"), b""
        except UnicodeDecodeError:
            split = split_utf8(piece)
            if split is None:
                return STOP
            text, tail = split
        if text:
            chars += text
            high = False
        lx.sub = (chars, esc, tail, high)
        return j
    if tail:  # an unfinished character followed by '"', '\' or a control byte
        return STOP
    b = data[i]
    if b == 0x5C:  # backslash
        lx.sub = (chars, "\\", tail, high)
        return i + 1
    if b != 0x22:  # a raw control character
        return STOP
    if lx.mode == M_KEYSTR:
        threads = lx.branches.key_done(lx.threads, chars)
        if threads is DEAD:
            return STOP
        lx.threads, lx.mode, lx.sub = threads, M_COLON, None
        return i + 1
    return i + 1 if lx.scalar_done(K_STR, chars, (K_STR, chars)) else STOP


def _escape(lx: _Lexer, b: int, i: int) -> int:
    chars, esc, tail, high = lx.sub
    if esc == "\\":
        if b == 0x75:  # u
            esc = "u"
        else:
            ch = ESCAPES.get(b)
            if ch is None:
                return STOP
            chars += ch
            esc = ""
            high = False
    else:
        if b not in HEX:
            return STOP
        esc += chr(b)
        if len(esc) == 5:
            cp = int(esc[1:], 16)
            if high and 0xDC00 <= cp <= 0xDFFF:  # the low half of a surrogate pair
                chars = chars[:-1] + chr(0x10000 + ((ord(chars[-1]) - 0xD800) << 10) + (cp - 0xDC00))
                high = False
            else:
                chars += chr(cp)
                high = 0xD800 <= cp <= 0xDBFF
            esc = ""
    lx.sub = (chars, esc, tail, high)
    return i + 1


# --- numbers and literals ----------------------------------------------------------------


def _number(lx: _Lexer, i: int) -> int:
    text, nstate = lx.sub
    b = lx.data[i]
    if b in DIGITS:
        if nstate == N_MINUS:
            nstate = N_ZERO if b == 0x30 else N_INT
        elif nstate == N_ZERO:
            return STOP  # no leading zeros
        elif nstate == N_DOT:
            nstate = N_FRAC
        elif nstate == N_E or nstate == N_ESIGN:
            nstate = N_EXP
    elif b == 0x2E:  # .
        if nstate != N_ZERO and nstate != N_INT:
            return STOP
        nstate = N_DOT
    elif b == 0x65 or b == 0x45:  # e E
        if nstate != N_ZERO and nstate != N_INT and nstate != N_FRAC:
            return STOP
        nstate = N_E
    elif b == 0x2B or b == 0x2D:  # + -
        if nstate != N_E:
            return STOP
        nstate = N_ESIGN
    else:  # the number ends here; the byte is read again after it
        if nstate not in N_FINAL:
            return STOP
        value = number_value(text)
        if value is None or not lx.scalar_done(K_NUM, value, (K_NUM, text)):
            return STOP
        return i
    lx.sub = (text + chr(b), nstate)
    return i + 1


def _literal(lx: _Lexer, i: int) -> int:
    rest, kind = lx.sub
    if lx.data[i] != rest[0]:
        return STOP
    rest = rest[1:]
    if rest:
        lx.sub = (rest, kind)
        return i + 1
    return i + 1 if lx.scalar_done(kind, LITERALS[kind][1], (kind, None)) else STOP


def number_value(text: str):
    """The Python value json.loads gives a number (None where json.loads fails)."""
    try:
        if "." in text or "e" in text or "E" in text:
            return float(text)
        return int(text)
    except (ValueError, OverflowError):  # e.g. more digits than int() accepts
        return None


# --- between tokens: whitespace, then the mode's structural byte ----------------------------


def _structural(lx: _Lexer, i: int) -> int:
    b = lx.data[i]
    if b in WS:
        if not lx.free or lx.ws >= lx.max_ws:
            return STOP
        lx.ws += 1
        return i + 1
    lx.ws = 0
    return _STRUCTURAL[lx.mode](lx, b, i)


def _value(lx: _Lexer, b: int, i: int) -> int:
    kind = FIRST_KIND.get(b)
    if kind is None:
        if lx.mode == M_ARR_FIRST and b == 0x5D:  # ]
            return i + 1 if lx.close(K_ARR, i) else STOP
        return STOP
    threads = lx.branches.start_value(lx.threads, kind)
    if threads is DEAD:
        return STOP
    lx.threads = threads
    if kind == K_OBJ or kind == K_ARR:
        syn = lx.syn
        depth = 1 if syn is None else syn[2] + 1
        if depth > MAX_DEPTH:
            return STOP
        lx.syn = (kind, lx.pos + i, depth, syn)
        lx.mode = M_OBJ_FIRST if kind == K_OBJ else M_ARR_FIRST
    elif kind == K_STR:
        lx.mode, lx.sub = M_STRING, FRESH_STRING
    elif kind == K_NUM:
        lx.mode = M_NUMBER
        lx.sub = (chr(b), N_MINUS if b == 0x2D else N_ZERO if b == 0x30 else N_INT)
    else:
        lx.mode, lx.sub = M_LITERAL, (LITERALS[kind][0], kind)
    return i + 1


def _key(lx: _Lexer, b: int, i: int) -> int:
    if b == 0x22:
        threads = lx.branches.start_key(lx.threads)
        if threads is DEAD:
            return STOP
        lx.threads, lx.mode, lx.sub = threads, M_KEYSTR, FRESH_STRING
        return i + 1
    if lx.mode == M_OBJ_FIRST and b == 0x7D:  # }
        return i + 1 if lx.close(K_OBJ, i) else STOP
    return STOP


def _colon(lx: _Lexer, b: int, i: int) -> int:
    if b != 0x3A:
        return STOP
    lx.mode = M_VALUE
    return i + 1


def _after(lx: _Lexer, b: int, i: int) -> int:
    kind = lx.syn[0]
    if b == 0x2C:  # ,
        if lx.threads:
            threads = lx.branches.comma(lx.threads)
            if threads is DEAD:
                return STOP
            lx.threads = threads
        lx.mode = M_KEY if kind == K_OBJ else M_VALUE
        return i + 1
    if (b == 0x7D and kind == K_OBJ) or (b == 0x5D and kind == K_ARR):
        return i + 1 if lx.close(kind, i) else STOP
    return STOP


def _done(lx: _Lexer, b: int, i: int) -> int:
    return STOP  # nothing but whitespace may follow the top-level value


_READERS = {
    M_STRING: _string, M_KEYSTR: _string, M_NUMBER: _number, M_LITERAL: _literal,
    M_VALUE: _structural, M_ARR_FIRST: _structural, M_OBJ_FIRST: _structural, M_KEY: _structural,
    M_COLON: _structural, M_AFTER: _structural, M_DONE: _structural,
}
_STRUCTURAL = {
    M_VALUE: _value, M_ARR_FIRST: _value, M_OBJ_FIRST: _key, M_KEY: _key,
    M_COLON: _colon, M_AFTER: _after, M_DONE: _done,
}
