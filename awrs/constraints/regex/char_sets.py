"""Character sets as sorted, disjoint, inclusive code-point ranges, and the Unicode tables
Python's ``re`` reads them with: ``\\d \\s \\w`` (or the ``regex`` package's), case folding.

Shared by the regex-to-DFA compiler (``dfa.py``) and the rewriting of JSON Schema
patterns for partial matching (``classes.py``). Tables are computed once, when first needed.
"""

from __future__ import annotations

import bisect
import re
from functools import cache, lru_cache

try:
    from re._casefix import _EXTRA_CASES  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover
    _EXTRA_CASES = {}

import _sre

MAX_CHAR = 0x10FFFF
SURROGATES = (0xD800, 0xDFFF)

Ranges = tuple[tuple[int, int], ...]


# --- character sets as sorted, disjoint, inclusive code-point ranges (surrogates excluded) ---


def normalize(ranges) -> Ranges:
    items = sorted((lo, hi) for lo, hi in ranges if lo <= hi)
    out: list[list[int]] = []
    for lo, hi in items:
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    result = []
    slo, shi = SURROGATES
    for lo, hi in out:
        if hi < slo or lo > shi:
            result.append((lo, hi))
            continue
        if lo < slo:
            result.append((lo, slo - 1))
        if hi > shi:
            result.append((shi + 1, hi))
    return tuple(result)


ALL: Ranges = normalize([(0, MAX_CHAR)])
EMPTY: Ranges = ()


def union(*sets: Ranges) -> Ranges:
    return normalize([r for s in sets for r in s])


def complement(a: Ranges) -> Ranges:
    out = []
    prev = 0
    for lo, hi in a:
        if lo > prev:
            out.append((prev, lo - 1))
        prev = hi + 1
    if prev <= MAX_CHAR:
        out.append((prev, MAX_CHAR))
    return normalize(out)


def intersect(a: Ranges, b: Ranges) -> Ranges:
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def difference(a: Ranges, b: Ranges) -> Ranges:
    return intersect(a, complement(b))


def contains(a: Ranges, c: int) -> bool:
    i = bisect.bisect_right(a, (c, MAX_CHAR + 1)) - 1
    return i >= 0 and a[i][0] <= c <= a[i][1]


def from_chars(chars) -> Ranges:
    return normalize((c, c) for c in chars)


def size(a: Ranges) -> int:
    return sum(hi - lo + 1 for lo, hi in a)


# --- Unicode tables, computed once and only when a pattern needs them -----------------------


@lru_cache(maxsize=1)
def _all_chars() -> str:
    return "".join(map(chr, range(SURROGATES[0]))) + "".join(map(chr, range(SURROGATES[1] + 1, MAX_CHAR + 1)))


@cache
def category(name: str, ascii_only: bool, regex_package: bool = False) -> Ranges:
    """The characters of \\d, \\s or \\w as Python's ``re`` (or the `regex` package) defines them.

    The two differ (Unicode versions and definitions: about 30,000 characters of ``\\w``).
    """
    pattern = {"digit": r"\d+", "space": r"\s+", "word": r"\w+"}[name]
    if regex_package:
        import regex as engine

        flags = engine.ASCII if ascii_only else 0
    else:
        engine, flags = re, re.ASCII if ascii_only else 0
    text = _all_chars()
    out = []
    for m in engine.finditer(pattern, text, flags):
        lo, hi = ord(text[m.start()]), ord(text[m.end() - 1])
        out.append((lo, hi))
    return normalize(out)


@lru_cache(maxsize=1)
def _case_tables() -> tuple[Ranges, dict[int, int], dict[int, list[int]]]:
    """Characters whose ``re`` lowercase differs from themselves, that mapping, and its inverse."""
    lower = _sre.unicode_tolower
    changed: dict[int, int] = {}
    inverse: dict[int, list[int]] = {}
    for c in range(MAX_CHAR + 1):
        low = lower(c)
        if low != c:
            changed[c] = low
            inverse.setdefault(low, []).append(c)
    return from_chars(changed), changed, inverse


@cache
def _fold_char(c: int) -> Ranges:
    """The characters that ``re`` with IGNORECASE treats as equal to ``c``."""
    _, changed, inverse = _case_tables()
    key = changed.get(c, c)
    keys = {key, *_EXTRA_CASES.get(key, ())}
    out = set()
    for k in keys:
        if k not in changed:
            out.add(k)
        out.update(inverse.get(k, ()))
    return from_chars(out)


def fold_case(s: Ranges) -> Ranges:
    """Every character that ``re`` with IGNORECASE matches against a member of ``s``.

    ``re`` lowercases both sides (plus a few extra equivalences such as i/ı); a character
    matches when its lowercase is the lowercase of some member.
    """
    if not s:
        return s
    if size(s) <= 512:
        return union(*(_fold_char(c) for lo, hi in s for c in range(lo, hi + 1)))
    changed_set, changed, _ = _case_tables()
    # keys: the lowercase forms of the members of s
    keys_unchanged = difference(s, changed_set)  # members that are their own lowercase
    extra_keys = {changed[c] for lo, hi in intersect(s, changed_set) for c in range(lo, hi + 1)}
    for key in list(extra_keys) + [k for k in _EXTRA_CASES if contains(keys_unchanged, k)]:
        extra_keys.update(_EXTRA_CASES.get(key, ()))
    keys = union(keys_unchanged, from_chars(extra_keys))
    # matching characters: unchanged ones that are keys, changed ones whose lowercase is a key
    matched = difference(keys, changed_set)
    more = [c for c, low in changed.items() if contains(keys, low)]
    return union(matched, from_chars(more))
