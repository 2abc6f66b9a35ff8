"""Patterns for the ``regex`` package that mean what they mean to Python's ``re``.

JSON Schema patterns are checked on complete strings by jsonschema, which uses ``re``; prefixes
are pruned with ``regex``, the only one of the two that matches partially. The two disagree on
what ``\\w``, ``\\s`` and ``\\d`` cover (``re``: ``str.isalnum``/``str.isspace``/decimal digits;
``regex``: Unicode properties), on about 30,000 code points. A prefix pruned by ``regex`` that
``re`` would accept makes a valid string unreachable. ``as_re_means`` spells those escapes (and
``\\b``, ``\\B``, which depend on ``\\w``) as explicit code-point ranges read off ``re`` itself.
"""

from __future__ import annotations

import functools
import re

from .char_sets import SURROGATES, category, complement

_CLASS_ESCAPES = "wWsSdD"
_ASCII_FLAG = re.compile(r"\(\?[a-zA-Z]*a[a-zA-Z]*[):-]")
_NAMES = {"w": "word", "s": "space", "d": "digit"}


@functools.cache
def _ranges(escape: str) -> str:
    """The code points ``re`` matches with ``\\<escape>``, as the inside of a character class."""
    members = category(_NAMES[escape.lower()], ascii_only=False)
    if escape.isupper():  # \W \S \D: everything else, lone surrogates included (JSON allows them)
        members = (*complement(members), SURROGATES)  # (char sets leave surrogates out)
    return "".join(
        f"\\U{first:08x}" if first == last else f"\\U{first:08x}-\\U{last:08x}" for first, last in members
    )


def _word_boundary(negated: bool) -> str:
    word = f"[{_ranges('w')}]"
    if negated:
        return f"(?:(?<={word})(?={word})|(?<!{word})(?!{word}))"
    return f"(?:(?<={word})(?!{word})|(?<!{word})(?={word}))"


def as_re_means(pattern: str) -> str:
    """``pattern`` with ``\\w \\W \\s \\S \\d \\D \\b \\B`` replaced by what ``re`` means by them."""
    if _ASCII_FLAG.search(pattern):  # under ASCII both packages mean [A-Za-z0-9_] etc.
        return pattern
    out: list[str] = []
    in_class = False
    class_start = 0  # index of the first member of the open class (a ']' there is literal)
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            escape = pattern[i + 1]
            if escape in _CLASS_ESCAPES:
                out.append(_ranges(escape) if in_class else f"[{_ranges(escape)}]")
            elif escape in "bB" and not in_class:
                out.append(_word_boundary(escape == "B"))
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if char == "]" and i > class_start:
                in_class = False
            elif char == "[" and pattern.startswith("[:", i):  # a POSIX class: copied whole
                end = pattern.find(":]", i + 2)
                if end != -1:
                    out.append(pattern[i : end + 2])
                    i = end + 2
                    continue
        elif char == "[":
            in_class = True
            class_start = i + 2 if pattern.startswith("[^", i) else i + 1
        out.append(char)
        i += 1
    return "".join(out)
