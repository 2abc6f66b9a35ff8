"""Python ``re`` syntax trees as NFAs over character sets (the first half of :mod:`.dfa`).

Each construct of ``re``'s parser becomes states and edges labelled with character sets; a
construct a grammar terminal cannot express raises :class:`RegexUnsupported` (see :mod:`.dfa`
for the semantics and the list).
"""

from __future__ import annotations

import re

try:  # Python >= 3.11
    import re._constants as _c  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _c  # type: ignore[no-redef]

from .char_sets import ALL, Ranges, category, complement, fold_case, intersect, union

MAX_REPEAT_EXPANSION = 5_000


class RegexUnsupported(ValueError):
    """The expression uses a feature that a grammar terminal cannot express."""


# --- NFA ----------------------------------------------------------------------------------


class NFA:
    def __init__(self) -> None:
        self.eps: list[list[int]] = []
        self.edges: list[list[tuple[int, int]]] = []  # (charset id, target)
        self.behind: list[list[tuple[int, bool, int]]] = []  # (charset id, negated, target)
        self.sets: list[Ranges] = []
        self._set_ids: dict[Ranges, int] = {}
        self.lazy = False
        self.max_repeat = MAX_REPEAT_EXPANSION

    def state(self) -> int:
        self.eps.append([])
        self.edges.append([])
        self.behind.append([])
        return len(self.eps) - 1

    def set_id(self, s: Ranges) -> int:
        if s not in self._set_ids:
            self._set_ids[s] = len(self.sets)
            self.sets.append(s)
        return self._set_ids[s]


_CATEGORIES = {
    _c.CATEGORY_DIGIT: ("digit", False),
    _c.CATEGORY_NOT_DIGIT: ("digit", True),
    _c.CATEGORY_SPACE: ("space", False),
    _c.CATEGORY_NOT_SPACE: ("space", True),
    _c.CATEGORY_WORD: ("word", False),
    _c.CATEGORY_NOT_WORD: ("word", True),
}


# A private flag bit (re's own flags use the low bits): read the pattern as the `regex` package
# does. It travels with the scoped flags through the whole construction.
REGEX_PACKAGE = 1 << 30


def _category(code, flags: int) -> Ranges:
    if code not in _CATEGORIES:
        raise RegexUnsupported(f"character category {code}")
    name, negated = _CATEGORIES[code]
    s = category(name, bool(flags & re.ASCII), bool(flags & REGEX_PACKAGE))
    return complement(s) if negated else s


_NEGATED_CATEGORIES = (_c.CATEGORY_NOT_DIGIT, _c.CATEGORY_NOT_SPACE, _c.CATEGORY_NOT_WORD)


def _class_items(items, flags: int) -> Ranges:
    negate = items and items[0][0] is _c.NEGATE
    if negate and flags & REGEX_PACKAGE and any(
        op is _c.CATEGORY and av in _NEGATED_CATEGORIES for op, av in items
    ):
        # The regex package reads these unlike re: [^\s\S] matches every character there.
        raise RegexUnsupported("a negated class holding \\D, \\S or \\W (the regex package reads it unlike re)")
    parts = []
    for op, av in items:
        if op is _c.NEGATE:
            negate = True
        elif op is _c.LITERAL:
            parts.append(((av, av),))
        elif op is _c.RANGE:
            parts.append(((av[0], av[1]),))
        elif op is _c.CATEGORY:
            parts.append(_category(av, flags))
        else:
            raise RegexUnsupported(f"{op} in a character class")
    s = _fold(union(*parts), flags)
    return complement(s) if negate else s


def _fold(s: Ranges, flags: int) -> Ranges:
    """Case-insensitive closure under ``flags`` (ASCII-only folding with re.ASCII, as re does)."""
    if not flags & re.IGNORECASE:
        return s
    if flags & REGEX_PACKAGE:
        raise RegexUnsupported("case-insensitive matching (the regex package folds case unlike re)")
    if flags & re.ASCII:
        lower = intersect(s, ((65, 90),))
        upper = intersect(s, ((97, 122),))
        return union(
            s, tuple((lo + 32, hi + 32) for lo, hi in lower), tuple((lo - 32, hi - 32) for lo, hi in upper)
        )
    return fold_case(s)


def _single_char_set(pattern, flags: int) -> Ranges | None:
    """The set of characters if ``pattern`` always matches exactly one character, else None."""
    items = list(pattern)
    if len(items) != 1:
        return None
    op, av = items[0]
    if op is _c.LITERAL:
        return _fold(((av, av),), flags)
    if op is _c.NOT_LITERAL:
        return complement(_fold(((av, av),), flags))
    if op is _c.ANY:
        return ALL if flags & re.DOTALL else complement(((10, 10),))
    if op is _c.IN:
        return _class_items(av, flags)
    if op is _c.SUBPATTERN:
        _, add, delete, sub = av
        return _single_char_set(sub, (flags | add) & ~delete)
    if op is _c.BRANCH:
        sets = [_single_char_set(alt, flags) for alt in av[1]]
        return None if any(s is None for s in sets) else union(*sets)
    return None


def build_nfa(nfa: NFA, pattern, flags: int, start: int) -> int:
    """Add ``pattern`` to the NFA from ``start``; return its end state."""
    cur = start
    for op, av in pattern:
        cur = _build_item(nfa, op, av, flags, cur)
    return cur


def _edge(nfa: NFA, s: Ranges, start: int) -> int:
    end = nfa.state()
    if s:
        nfa.edges[start].append((nfa.set_id(s), end))
    return end


def _build_item(nfa: NFA, op, av, flags: int, start: int) -> int:
    if op in (_c.LITERAL, _c.NOT_LITERAL, _c.ANY, _c.IN):
        return _edge(nfa, _single_char_set([(op, av)], flags), start)
    if op is _c.SUBPATTERN:
        _, add, delete, sub = av
        return build_nfa(nfa, sub, (flags | add) & ~delete, start)
    if op is _c.BRANCH:
        end = nfa.state()
        for alt in av[1]:
            s = nfa.state()
            nfa.eps[start].append(s)
            nfa.eps[build_nfa(nfa, alt, flags, s)].append(end)
        return end
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
        low, high, sub = av
        if op is _c.MIN_REPEAT and low != high:
            nfa.lazy = True
        unbounded = high is _c.MAXREPEAT or high == _c.MAXREPEAT
        if low > nfa.max_repeat or (not unbounded and high > nfa.max_repeat):
            raise RegexUnsupported(f"a repetition count above {nfa.max_repeat}")
        cur = start
        for _ in range(low):
            cur = build_nfa(nfa, sub, flags, cur)
        if unbounded:
            loop = nfa.state()
            nfa.eps[cur].append(loop)
            nfa.eps[build_nfa(nfa, sub, flags, loop)].append(loop)
            return loop
        end = nfa.state()
        nfa.eps[cur].append(end)
        for _ in range(high - low):
            cur = build_nfa(nfa, sub, flags, cur)
            nfa.eps[cur].append(end)
        return end
    if op is _c.ASSERT_NOT or op is _c.ASSERT:
        direction, sub = av
        if direction != -1:
            raise RegexUnsupported("a lookahead")
        s = _single_char_set(sub, flags)
        if s is None:
            raise RegexUnsupported("a lookbehind wider than one character")
        end = nfa.state()
        nfa.behind[start].append((nfa.set_id(s), op is _c.ASSERT_NOT, end))
        return end
    if op is _c.AT:
        raise RegexUnsupported(f"an anchor or word boundary ({str(av).lower()})")
    if op in (_c.GROUPREF, _c.GROUPREF_EXISTS):
        raise RegexUnsupported("a backreference")
    name = str(op).lower()
    if "possessive" in name or "atomic" in name:
        raise RegexUnsupported("a possessive quantifier or atomic group")
    raise RegexUnsupported(f"{name}")
