"""Values and lexer facts shared by the JSON Schema compiler and checker.

Kinds of JSON values as bits, the number lexer's sub-states, canonical forms of values (for
``enum``, ``const`` and ``uniqueItems``), partial regex matching of string prefixes, prefix
patterns for string formats, ``multipleOf``, and what a name or number prefix can still become.

Not here: schema compilation (``compile.py``), the compiled pieces
(``nodes.py``), the constraint (``schema.py``) and its lexer (``lexer.py``).
"""

from __future__ import annotations

import bisect
import math
import re
import warnings
from fractions import Fraction
from typing import Any

import regex as _regex

from ...errors import ConfigError
from ..regex.classes import as_re_means

# Kinds of JSON values, as bits, so that a set of allowed kinds is an int.
K_OBJ, K_ARR, K_STR, K_NUM, K_TRUE, K_FALSE, K_NULL = 1, 2, 4, 8, 16, 32, 64
K_ALL = 127
TYPE_KINDS = {
    "object": K_OBJ,
    "array": K_ARR,
    "string": K_STR,
    "number": K_NUM,
    "integer": K_NUM,
    "boolean": K_TRUE | K_FALSE,
    "null": K_NULL,
}
KIND_FIRST_BYTES = {
    K_OBJ: b"{",
    K_ARR: b"[",
    K_STR: b'"',
    K_NUM: b"-0123456789",
    K_TRUE: b"t",
    K_FALSE: b"f",
    K_NULL: b"n",
}

MAX_ALTERNATIVES = 64  # a disjunction that would expand to more is enforced at completion only
REGEX_TIMEOUT = 0.05  # seconds for one partial match on a prefix (a timeout counts as alive)
CACHE_LIMIT = 4096  # per-alternative caches of child alternatives

# Keywords the incremental checker enforces itself (on prefixes and at value completion).
NATIVE = frozenset(
    {
        "type",
        "enum",
        "const",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "properties",
        "patternProperties",
        "additionalProperties",
        "required",
        "minProperties",
        "maxProperties",
        "propertyNames",
        "dependentRequired",
        "items",
        "prefixItems",
        "additionalItems",
        "minItems",
        "maxItems",
        "uniqueItems",
        "allOf",
        "anyOf",
        "$ref",
    }
)
# Keywords used for pruning but whose exact meaning is checked when the value completes.
APPROXIMATED = frozenset({"oneOf", "if", "then", "else"})

# Sound over-approximations of the strings the format checkers accept (prefix pruning only;
# completed strings are checked by the format checker itself). Used only for formats the
# validator's format checker actually checks. rfc3339-validator uses ``re.match`` with ``$``,
# which also accepts one trailing newline, and upper-cases the text first (so 't' and 'z').
_TIME = r"(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d+)?(?:[Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)"
_DATE = r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
FORMAT_PREFIXES = {
    "date": _DATE,
    "date-time": _DATE + r"[Tt]" + _TIME + r"\n?",
    "time": _TIME + r"\n?",
    "ipv4": r"\d{1,3}(?:\.\d{1,3}){3}",
    "uri": r"[A-Za-z][A-Za-z0-9+.\-]*:.*",
}


# Sub-states of the number lexer (shared with lexer.py).
N_MINUS, N_ZERO, N_INT, N_DOT, N_FRAC, N_E, N_ESIGN, N_EXP = range(8)
N_FINAL = frozenset({N_ZERO, N_INT, N_FRAC, N_EXP})


def canon(value: Any) -> Any:
    """A hashable key equal for two JSON values exactly when jsonschema's ``equal`` says so.

    Booleans differ from numbers; 1 and 1.0 are equal; objects compare as sets of pairs.
    """
    if value is None:
        return ("n",)
    if value is True or value is False:
        return ("b", value)
    if isinstance(value, int):
        return ("i", value)
    if isinstance(value, float):
        if value.is_integer():
            return ("i", int(value))
        return ("f", value)
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, list):
        return ("l", tuple(canon(v) for v in value))
    if isinstance(value, dict):
        return ("o", frozenset((k, canon(v)) for k, v in value.items()))
    return ("?", repr(value))


_CANON_KIND = {"n": K_NULL, "i": K_NUM, "f": K_NUM, "s": K_STR, "l": K_ARR, "o": K_OBJ}


def canon_kinds_mask(keys) -> int:
    mask = 0
    for k in keys:
        if k[0] == "b":
            mask |= K_TRUE if k[1] else K_FALSE
        else:
            mask |= _CANON_KIND.get(k[0], 0)
    return mask


def kind_of(value: Any) -> int:
    if value is None:
        return K_NULL
    if value is True:
        return K_TRUE
    if value is False:
        return K_FALSE
    if isinstance(value, (int, float)):
        return K_NUM
    if isinstance(value, str):
        return K_STR
    if isinstance(value, list):
        return K_ARR
    if isinstance(value, dict):
        return K_OBJ
    return 0


def compile_pattern(pattern: str, where: str):
    """The pattern as jsonschema runs it (``re``) and as a prefix matcher (``regex``, partial,
    with ``re``'s meaning of the class escapes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            exact = re.compile(pattern)
        except (re.error, TypeError, OverflowError, RecursionError) as err:
            raise ConfigError(f"invalid pattern {pattern!r} in {where}: {err}") from None
        try:
            partial = _regex.compile(as_re_means(pattern))
        except Exception:  # a pattern only `re` understands: no prefix pruning for it
            partial = None
    return exact, partial


def partial_search(compiled, text: str) -> bool:
    """Whether some continuation of ``text`` may contain a match (timeouts count as yes)."""
    try:
        return compiled.search(text, partial=True, timeout=REGEX_TIMEOUT) is not None
    except TimeoutError:
        return True


def partial_full(compiled, text: str) -> bool:
    try:
        return compiled.fullmatch(text, partial=True, timeout=REGEX_TIMEOUT) is not None
    except TimeoutError:
        return True


def multiple_of_fails(instance, dB) -> bool:
    """jsonschema's multipleOf, operation for operation (so floats round the same way)."""
    if isinstance(dB, float):
        quotient = instance / dB
        try:
            return int(quotient) != quotient
        except OverflowError:
            return (Fraction(instance) / Fraction(dB)).denominator != 1
    return bool(instance % dB)


# Lexer modes.
M_VALUE, M_ARR_FIRST, M_OBJ_FIRST, M_KEY, M_COLON, M_AFTER = 0, 1, 2, 3, 4, 5
M_STRING, M_KEYSTR, M_NUMBER, M_LITERAL, M_DONE = 6, 7, 8, 9, 10
# Thread frame tags.
T_VAL, T_OBJ, T_ARR = 0, 1, 2

WS = frozenset(b" \t\n\r")
DIGITS = frozenset(b"0123456789")
HEX = frozenset(b"0123456789abcdefABCDEF")
ESCAPES = {
    ord('"'): '"',
    ord("\\"): "\\",
    ord("/"): "/",
    ord("b"): "\b",
    ord("f"): "\f",
    ord("n"): "\n",
    ord("r"): "\r",
    ord("t"): "\t",
}
ESCAPE_BYTES = frozenset(ESCAPES) | {ord("u")}
FIRST_KIND = {
    ord("{"): K_OBJ,
    ord("["): K_ARR,
    ord('"'): K_STR,
    ord("t"): K_TRUE,
    ord("f"): K_FALSE,
    ord("n"): K_NULL,
}
FIRST_KIND.update({c: K_NUM for c in b"-0123456789"})
LITERALS = {K_TRUE: (b"rue", True), K_FALSE: (b"alse", False), K_NULL: (b"ull", None)}
NUMBER_NEXT = {
    N_MINUS: frozenset(DIGITS),
    N_ZERO: frozenset(b".eE"),
    N_INT: frozenset(DIGITS | set(b".eE")),
    N_DOT: frozenset(DIGITS),
    N_FRAC: frozenset(DIGITS | set(b"eE")),
    N_E: frozenset(DIGITS | set(b"+-")),
    N_ESIGN: frozenset(DIGITS),
    N_EXP: frozenset(DIGITS),
}
RUN = re.compile(rb'[^"\\\x00-\x1f]+').match
EMPTY: frozenset = frozenset()
FRESH_STRING = ("", "", b"", False)  # chars, escape in progress, unfinished UTF-8, high surrogate last


def has_prefix(names: tuple[str, ...], text: str) -> bool:
    """Whether some string in the sorted tuple ``names`` starts with ``text``."""
    i = bisect.bisect_left(names, text)
    return i < len(names) and names[i].startswith(text)


def number_prefix_range(text: str, nstate: int) -> tuple[float, float]:
    """Bounds of the values a JSON number starting with ``text`` can take.

    Exponents can scale any mantissa, and underflow ("1e-999") reaches zero, so before the
    exponent's digits only the sign is known; with exponent digits the magnitude can only grow
    (positive exponent) or shrink (negative exponent) from its current value.
    """
    negative = text.startswith("-")
    magnitude_lo, magnitude_hi = 0.0, math.inf
    if nstate == N_EXP:
        try:
            current = abs(float(text))
        except (ValueError, OverflowError):
            current = math.inf
        exponent = text[max(text.find("e"), text.find("E")) + 1 :]
        if exponent.startswith("-"):
            magnitude_hi = current
        else:
            magnitude_lo = current
    if negative:
        return -magnitude_hi, -magnitude_lo
    return magnitude_lo, magnitude_hi
