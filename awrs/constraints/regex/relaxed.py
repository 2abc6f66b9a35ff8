"""A lookaround-free pattern that matches at least every text a pattern matches.

The `regex` package's partial matching is loose after a lookaround: once an assertion reaches
the end of the text, the prefix counts as alive whatever follows, so ``(?=\\w*\\d)\\w{6}`` keeps
``"Hello, world"`` alive and a run writes on to its token limit. Removing the assertions gives a
pattern whose partial match is a necessary condition for the original's, and is exact where
the assertions are not involved, so :class:`~awrs.constraints.regex.Regex` checks both.
"""

from __future__ import annotations

import regex as _regex

_LOOKAROUND_OPENERS = ("(?=", "(?!", "(?<=", "(?<!")
# Constructs under which removing an assertion could change what matches, not only widen it:
# atomic groups and possessive quantifiers commit to the first way that matches, conditionals may
# test an assertion, recursion re-enters the pattern, and \K / verbs change what a match means;
# verbose mode (comments) and version 1 (nested sets) would need a fuller parser than this one.
_UNSAFE = _regex.compile(r"\(\?>|[*+?}]\+|\(\?\(|\(\?(?:R|\d|&|P>|P=)|\\K|\(\*|\(\?[a-zA-Z-]*[xV]")
_UNSAFE_FLAGS = _regex.VERBOSE | _regex.V1


def without_lookarounds(pattern: str, flags: int = 0) -> str | None:
    """``pattern`` with every lookaround assertion removed, or None where that is not known to
    give a pattern matching at least every text ``pattern`` matches.

    Removing a zero-width assertion only drops a test from each way of matching, so the result
    matches a superset, provided no capture group inside an assertion is numbered or referenced
    (numbers would shift) and no atomic group, possessive quantifier, conditional, recursion or
    verb lets an assertion decide which way is taken. None also when nothing would change.
    """
    if "(?" not in pattern:
        return None
    if flags & _UNSAFE_FLAGS or _UNSAFE.search(pattern):
        return None
    out: list[str] = []
    i, removed = 0, False
    try:
        while i < len(pattern):
            if pattern.startswith(_LOOKAROUND_OPENERS, i):
                end = _group_end(pattern, i)
                if _has_capture(pattern[i:end]):
                    return None
                out.append("(?:)")
                removed, i = True, end
                continue
            end = _atom_end(pattern, i)
            out.append(pattern[i:end])
            i = end
    except ValueError:  # unbalanced: leave it to the regex compiler's own error
        return None
    return "".join(out) if removed else None


def relaxed_pattern(pattern: str, flags: int = 0):
    """The compiled lookaround-free superset of ``pattern``, or None (see :func:`without_lookarounds`)."""
    relaxed = without_lookarounds(pattern, flags)
    if relaxed is None:
        return None
    try:
        return _regex.compile(relaxed, flags)
    except (_regex.error, OverflowError, RecursionError, MemoryError):
        return None


def _atom_end(pattern: str, i: int) -> int:
    """Index just past the atom at ``i``: an escape, a whole character class, or one character."""
    if pattern[i] == "\\":
        return i + 2
    if pattern[i] != "[":
        return i + 1
    j = i + 1
    if pattern.startswith("^", j):
        j += 1
    if pattern.startswith("]", j):  # a leading ] is a literal
        j += 1
    while j < len(pattern):
        if pattern[j] == "\\":
            j += 2
        elif pattern.startswith("[:", j) and ":]" in pattern[j + 2:]:  # POSIX class [:alpha:]
            j = pattern.index(":]", j + 2) + 2
        elif pattern[j] == "]":
            return j + 1
        else:
            j += 1
    raise ValueError("unterminated character class")


def _group_end(pattern: str, start: int) -> int:
    """Index just past the group opening at ``start``."""
    depth, i = 0, start
    while i < len(pattern):
        depth += {"(": 1, ")": -1}.get(pattern[i], 0)
        if depth == 0:
            return i + 1
        i = _atom_end(pattern, i)
    raise ValueError("unbalanced parentheses")


def _has_capture(group: str) -> bool:
    """Whether a group's text opens a capturing group (numbered or named) inside it."""
    i = _atom_end(group, 0)  # past the group's own "("
    while i < len(group):
        if group[i] == "(" and (not group.startswith("(?", i) or group.startswith(("(?P<", "(?<"), i)
                                and not group.startswith(("(?<=", "(?<!"), i)):
            return True
        i = _atom_end(group, i)
    return False
