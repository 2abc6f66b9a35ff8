"""Does a SQL prefix already name a column that its table lacks? A look-ahead for SMC.

A context-free grammar accepts ``T2.singer_id`` after any alias ``T2``; only SQLite, once the
statement is whole, says that the table behind ``T2`` has no such column, and the constraint
asks it at the ``;`` or at the end. A model that wrote such a column seldom recovers: it cannot
end the query, so it goes on until the token limit (on Spider with Qwen2.5-Coder 1.5B, every
particle of an instance wrote such a join and none finished in 150 tokens).

The part of a prefix up to its last (or last but one) whole word is often a whole statement already. If SQLite
rejects it for a column of an alias or table that this part names, or for a column name that
several of its tables share, no continuation can make that reference valid in the common
case. Not in every case (an alias may be bound again later in a subquery), so SMC uses the
verdict as a twist, a penalty while resampling that is taken back at the end, and never as a
kill: the target stays exact, and a doubted particle that does finish keeps its weight.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_SPACE = " \t\n\r\f\v"
_NO_SUCH_COLUMN = "no such column: "
_AMBIGUOUS = "ambiguous column name: "


def names_missing_column(text: str, prepare_error: Callable[[str], str | None]) -> bool:
    """Whether ``text`` up to one of its last two word boundaries is a statement that SQLite
    rejects for a column that continuing cannot fix. ``prepare_error(sql)`` is SQLite's
    message, or None if ``sql`` prepares. (Two, so that ``... JOIN t AS T2 ON `` is judged by
    ``... JOIN t AS T2``: a keyword that starts the next clause is a whole word too.)"""
    end = len(text)
    for _ in range(2):
        cut = max(text.rfind(c, 0, end) for c in _SPACE)
        if cut <= 0:
            return False
        head = text[:cut].rstrip(_SPACE)
        if _doomed(head, prepare_error):
            return True
        end = len(head)
    return False


def _doomed(head: str, prepare_error: Callable[[str], str | None]) -> bool:
    if not head or ";" in head:  # the constraint itself judges a statement ended by ``;``
        return False
    error = prepare_error(head)
    if error is None:
        return False
    if error.startswith(_AMBIGUOUS):  # ``JOIN t USING (c)`` would still resolve it
        return _joins_closed(head)
    if not error.startswith(_NO_SUCH_COLUMN):
        return False  # most often the head is not a whole statement yet
    column = error[len(_NO_SUCH_COLUMN):]
    qualifier, dot, _ = column.rpartition(".")
    # after UNION, INTERSECT or EXCEPT the next SELECT binds its own aliases
    last_select = re.split(r"\b(?:union|intersect|except)\b", head, flags=re.IGNORECASE)[-1]
    return bool(dot) and _names(last_select, qualifier)


def _joins_closed(sql: str) -> bool:
    """Whether a clause that ends the last join (``ON``, ``WHERE``, ...) follows it."""
    joins = [m.end() for m in re.finditer(r"\bjoin\b", sql, flags=re.IGNORECASE)]
    after = sql[joins[-1]:] if joins else sql
    return re.search(r"\b(?:on|where|group|order|having|limit)\b", after, flags=re.IGNORECASE) is not None


def _names(sql: str, name: str) -> bool:
    """Whether ``sql`` binds ``name`` as a table or an alias (``FROM name``, ``JOIN t name``,
    ``AS name``)."""
    word = re.escape(name)
    pattern = rf"\b(?:from|join)\s+(?:\w+\s+)?{word}\b|\bas\s+{word}\b"
    return re.search(pattern, sql, flags=re.IGNORECASE) is not None
