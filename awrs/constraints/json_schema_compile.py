"""Compile a JSON Schema into the small immutable pieces that :class:`JsonSchema` checks.

A schema object is compiled once into a :class:`Node`. Its *assertion* keywords (type, enum,
string, number, object and array keywords) become one :class:`Atom`; its *applicators*
(``allOf``, ``anyOf``, ``oneOf``, ``$ref``, ``if``/``then``/``else``) are expanded into a
disjunction of conjunctions, the node's :class:`Alt` alternatives. A value is alive under a
node while it is alive under at least one alternative, which is what lets the incremental
checker keep a set of live branch states for ``anyOf``.

The one rule (see :mod:`awrs.constraints.base`) is that pruning must be *sound*: an alternative
may over-approximate the schema, never under-approximate it. Where a keyword cannot be decided
on prefixes (``not``, ``oneOf``'s "exactly one", ``if``, ``contains``, ``unevaluated*``,
``dependentSchemas``, recursion through applicators) the alternative keeps the node in its
``checks``: the completed value is validated with the `jsonschema` package against that
subschema, and the whole document is always validated with `jsonschema` at the end.

Not here: the JSON lexer and the states (``json_schema.py``).
"""

from __future__ import annotations

import bisect
import math
import re
import warnings
from fractions import Fraction
from typing import Any

import regex as _regex

from ..errors import ConfigError

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


# Sub-states of the number lexer (shared with json_schema.py).
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


def _canon_kinds_mask(keys) -> int:
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


def _compile_re(pattern: str, where: str):
    """The pattern as jsonschema runs it (``re``) and as a prefix matcher (``regex``, partial)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            exact = re.compile(pattern)
        except (re.error, TypeError, OverflowError, RecursionError) as err:
            raise ConfigError(f"invalid pattern {pattern!r} in {where}: {err}") from None
        try:
            partial = _regex.compile(pattern)
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


class Node:
    """One schema object (or boolean schema) under one base URI."""

    __slots__ = ("schema", "resolver", "alts", "atom", "children", "validator", "path")

    def __init__(self, schema, resolver, path: str) -> None:
        self.schema = schema
        self.resolver = resolver
        self.alts: tuple[Alt, ...] | None = None
        self.atom: Atom | None = None
        self.children: list[Node] = []
        self.validator = None
        self.path = path

    def __repr__(self) -> str:
        return f"Node({self.path})"


class Atom:
    """The assertion keywords of one schema object."""

    __slots__ = (
        "kmask",
        "int_only",
        "enum_set",
        "enum_strs",
        "smin",
        "smax",
        "patterns",
        "formats",
        "nums",
        "mults",
        "props",
        "names",
        "pprops",
        "additional",
        "restricted",
        "required",
        "pmin",
        "pmax",
        "depreq",
        "pnames",
        "prefix",
        "rest",
        "imin",
        "imax",
        "unique",
        "has_obj",
        "has_arr",
    )

    def __init__(self) -> None:
        self.kmask = K_ALL
        self.int_only = False
        self.enum_set = None
        self.enum_strs = None
        self.smin = 0
        self.smax = None
        self.patterns = ()
        self.formats = ()
        self.nums = ()
        self.mults = ()
        self.props = None
        self.names = ()
        self.pprops = ()
        self.additional = None
        self.restricted = False
        self.required = frozenset()
        self.pmin = 0
        self.pmax = None
        self.depreq = ()
        self.pnames = None
        self.prefix = ()
        self.rest = None
        self.imin = 0
        self.imax = None
        self.unique = False
        self.has_obj = False
        self.has_arr = False


class Alt:
    """A conjunction of atoms plus the subschemas to validate exactly at value completion.

    Alternatives are interned (one object per conjunction) and compared by identity, so the
    frames of the checker's states hash fast. The merged fields are precomputed.
    """

    __slots__ = (
        "compiler",
        "atoms",
        "checks",
        "kmask",
        "int_only",
        "enum_sets",
        "str_enums",
        "smin",
        "smax",
        "spatterns",
        "sformats",
        "fpartial",
        "str_prefix_trivial",
        "nums",
        "mults",
        "num_prefix_trivial",
        "obj_atoms",
        "restricted_atoms",
        "required",
        "pmin",
        "pmax",
        "depreq",
        "arr_atoms",
        "imin",
        "imax",
        "unique",
        "needs_value",
        "first_bytes",
        "has_pnames",
        "_kids",
        "_items",
        "_key_alts",
        "__weakref__",
    )

    def __init__(self, compiler: Compiler, atoms: tuple[Atom, ...], checks: tuple[Node, ...]) -> None:
        self.compiler = compiler
        self.atoms = atoms
        self.checks = checks
        kmask, int_only = K_ALL, False
        enum_sets, str_enums, spatterns, sformats, fpartial = [], [], [], [], []
        smin, smax = 0, None
        nums, mults = [], []
        obj_atoms, restricted, arr_atoms = [], [], []
        required: set[str] = set()
        pmin, pmax, imin, imax = 0, None, 0, None
        depreq: list = []
        unique = False
        for a in atoms:
            kmask &= a.kmask
            int_only = int_only or a.int_only
            if a.enum_set is not None:
                enum_sets.append(a.enum_set)
                str_enums.append(a.enum_strs)
            smin = max(smin, a.smin)
            if a.smax is not None:
                smax = a.smax if smax is None else min(smax, a.smax)
            spatterns.extend(a.patterns)
            sformats.extend(a.formats)
            nums.extend(a.nums)
            mults.extend(a.mults)
            if a.has_obj:
                obj_atoms.append(a)
                if a.restricted:
                    restricted.append(a)
                required |= a.required
                pmin = max(pmin, a.pmin)
                if a.pmax is not None:
                    pmax = a.pmax if pmax is None else min(pmax, a.pmax)
                depreq.extend(a.depreq)
            if a.has_arr:
                arr_atoms.append(a)
                imin = max(imin, a.imin)
                if a.imax is not None:
                    imax = a.imax if imax is None else min(imax, a.imax)
                unique = unique or a.unique
        self.kmask = kmask
        self.int_only = int_only
        self.enum_sets = tuple(enum_sets)
        self.str_enums = tuple(s for s in str_enums if s is not None)
        self.smin, self.smax = smin, smax
        self.spatterns = tuple(spatterns)
        self.sformats = tuple(sformats)
        fpartial = [p for _, p in sformats if p is not None]
        self.fpartial = tuple(fpartial)
        self.str_prefix_trivial = not (
            smax is not None or self.str_enums or any(p for _, _, p in self.spatterns) or fpartial
        )
        self.nums = tuple(nums)
        self.mults = tuple(mults)
        self.num_prefix_trivial = not nums and not (int_only and compiler.draft4_integers)
        self.obj_atoms = tuple(obj_atoms)
        self.restricted_atoms = tuple(restricted)
        self.required = frozenset(required)
        self.pmin, self.pmax = pmin, pmax
        self.depreq = tuple(depreq)
        self.arr_atoms = tuple(arr_atoms)
        self.imin, self.imax = imin, imax
        self.unique = unique
        self.needs_value = bool(enum_sets) or bool(checks)
        first = set()
        for bit, chars in KIND_FIRST_BYTES.items():
            if kmask & bit:
                first.update(chars)
        self.first_bytes = frozenset(first)
        self.has_pnames = any(a.pnames is not None for a in obj_atoms)
        self._kids: dict[str, tuple[Alt, ...]] = {}
        self._items: dict[int, tuple[Alt, ...]] = {}
        self._key_alts: tuple[Alt, ...] | None = None

    def __repr__(self) -> str:
        return f"Alt(kinds={self.kmask:07b}, atoms={len(self.atoms)}, checks={self.checks})"

    # --- children -------------------------------------------------------------------------

    def child_alts(self, key: str) -> tuple[Alt, ...]:
        """The alternatives for the value of property ``key`` (empty: the key is not allowed)."""
        kids = self._kids.get(key)
        if kids is None:
            nodes = []
            for a in self.obj_atoms:
                matched = False
                if a.props is not None:
                    node = a.props.get(key)
                    if node is not None:
                        nodes.append(node)
                        matched = True
                for _, exact, _, node in a.pprops:
                    if exact.search(key):
                        nodes.append(node)
                        matched = True
                if not matched and a.additional is not None:
                    nodes.append(a.additional)
            kids = self.compiler.conjunction(nodes)
            if len(self._kids) >= CACHE_LIMIT:
                self._kids.clear()
            self._kids[key] = kids
        return kids

    def item_alts(self, index: int) -> tuple[Alt, ...]:
        kids = self._items.get(index)
        if kids is None:
            nodes = []
            for a in self.arr_atoms:
                node = a.prefix[index] if index < len(a.prefix) else a.rest
                if node is not None:
                    nodes.append(node)
            kids = self.compiler.conjunction(nodes)
            if len(self._items) >= CACHE_LIMIT:
                self._items.clear()
            self._items[index] = kids
        return kids

    def key_alts(self) -> tuple[Alt, ...]:
        """Alternatives that property names must satisfy (``propertyNames``)."""
        if self._key_alts is None:
            self._key_alts = self.compiler.conjunction([a.pnames for a in self.obj_atoms if a.pnames])
        return self._key_alts

    # --- strings --------------------------------------------------------------------------

    def str_prefix_ok(self, text: str, count: int) -> bool:
        """Whether a string that starts with ``text`` (``count`` characters so far) may be valid."""
        if self.smax is not None and count > self.smax:
            return False
        for names in self.str_enums:
            if not has_prefix(names, text):
                return False
        for _, _, partial in self.spatterns:
            if partial is not None and not partial_search(partial, text):
                return False
        for partial in self.fpartial:
            if not partial_full(partial, text):
                return False
        return True

    def str_ok(self, value: str) -> bool:
        """Exact check of the assertion keywords on a complete string (checks excluded)."""
        if not self.kmask & K_STR:
            return False
        n = len(value)
        if n < self.smin or (self.smax is not None and n > self.smax):
            return False
        if self.enum_sets:
            key = ("s", value)
            for allowed in self.enum_sets:
                if key not in allowed:
                    return False
        for _, exact, _ in self.spatterns:
            if not exact.search(value):
                return False
        if self.sformats:
            checker = self.compiler.format_checker
            for name, _ in self.sformats:
                try:
                    if not checker.conforms(value, name):
                        return False
                except Exception:
                    return False
        return True

    def key_prefix_ok(self, text: str, seen: frozenset) -> bool:
        """Whether a property name starting with ``text`` may be allowed (names and propertyNames)."""
        for a in self.restricted_atoms:
            if not name_may_follow(a, text, seen):
                return False
        if self.has_pnames:
            count = len(text)
            if not any(k.kmask & K_STR and k.str_prefix_ok(text, count) for k in self.key_alts()):
                return False
        return True

    def key_ok(self, key: str) -> bool:
        """Exact ``propertyNames`` check of a complete name (names themselves: child_alts)."""
        if not self.has_pnames:
            return True
        for k in self.key_alts():
            if k.str_ok(key) and self.compiler.run_checks(k.checks, key):
                return True
        return False

    # --- numbers --------------------------------------------------------------------------

    def num_prefix_ok(self, text: str, nstate: int) -> bool:
        """Sound bound check of a number prefix (exponents can move it almost anywhere)."""
        if self.int_only and self.compiler.draft4_integers and ("." in text or "e" in text or "E" in text):
            return False
        if not self.nums:
            return True
        lo, hi = number_prefix_range(text, nstate)
        for op, bound in self.nums:
            if op == "min" and hi < bound:
                return False
            if op == "xmin" and hi <= bound:
                return False
            if op == "max" and lo > bound:
                return False
            if op == "xmax" and lo >= bound:
                return False
        return True

    def num_ok(self, value) -> bool:
        if not self.kmask & K_NUM:
            return False
        if self.int_only:
            if not isinstance(value, int):
                if self.compiler.draft4_integers or not value.is_integer():
                    return False
        for op, bound in self.nums:
            if op == "min":
                if value < bound:
                    return False
            elif op == "max":
                if value > bound:
                    return False
            elif op == "xmin":
                if value <= bound:
                    return False
            elif value >= bound:
                return False
        for dB in self.mults:
            try:
                if multiple_of_fails(value, dB):
                    return False
            except Exception:
                return False
        if self.enum_sets:
            key = canon(value)
            for allowed in self.enum_sets:
                if key not in allowed:
                    return False
        return True

    # --- containers -----------------------------------------------------------------------

    def obj_close_ok(self, seen: frozenset) -> bool:
        if len(seen) < self.pmin or not self.required <= seen:
            return False
        for key, deps in self.depreq:
            if key in seen and not deps <= seen:
                return False
        return True

    def value_ok(self, value) -> bool:
        """enum/const on a complete container value."""
        if self.enum_sets:
            key = canon(value)
            for allowed in self.enum_sets:
                if key not in allowed:
                    return False
        return True


def has_prefix(names: tuple[str, ...], text: str) -> bool:
    """Whether some string in the sorted tuple ``names`` starts with ``text``."""
    i = bisect.bisect_left(names, text)
    return i < len(names) and names[i].startswith(text)


def name_may_follow(atom: Atom, text: str, seen: frozenset) -> bool:
    """Whether a property name starting with ``text`` can be allowed by an atom that forbids
    additional properties: a prefix of an unseen declared name, or partially matching a pattern."""
    names = atom.names
    i = bisect.bisect_left(names, text)
    while i < len(names) and names[i].startswith(text):
        if names[i] not in seen:
            return True
        i += 1
    for _, _, partial, _ in atom.pprops:
        if partial is None or partial_search(partial, text):
            return True
    return False


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


class Compiler:
    """Turns schema objects into nodes, atoms and interned alternatives."""

    def __init__(
        self, draft: int, validators: frozenset[str], specification, format_checker, root_validator
    ) -> None:
        self.draft = draft
        self.validators = validators
        self.specification = specification
        self.format_checker = format_checker
        self.root_validator = root_validator
        self.draft4_integers = draft <= 4
        self.legacy_ref = draft <= 7
        self.nodes: dict[tuple[int, str], Node] = {}
        self.interned: dict[tuple, Alt] = {}
        self.expanding: set[int] = set()
        self.completion_only: set[str] = set()
        self.approximations: list[str] = []
        self.unknown_keywords: set[str] = set()
        self.unchecked_formats: set[str] = set()
        self.dynamic = False
        self.check_errors = 0
        self.true_alt = self.alt((), ())
        self._keep: list = []  # schema objects created here, kept alive for id() keys

    # --- nodes ----------------------------------------------------------------------------

    def node(self, schema, resolver, path: str, *, entered: bool = False) -> Node:
        """The node of ``schema``; ``entered``: ``resolver`` already has its base URI (a $ref target)."""
        if isinstance(schema, dict):
            if not entered:
                resolver = resolver.in_subresource(self.specification.create_resource(schema))
        elif not isinstance(schema, bool):
            raise ConfigError(
                f"a schema must be an object or a boolean at {path or '/'}, got {type(schema).__name__}"
            )
        key = (id(schema), getattr(resolver, "_base_uri", ""))
        node = self.nodes.get(key)
        if node is None:
            node = Node(schema, resolver, path)
            self.nodes[key] = node
        return node

    def compile_all(self, root: Node) -> None:
        """Compile every node reachable from ``root`` (resolving every $ref: errors surface now)."""
        seen = {id(root)}
        todo = [root]
        while todo:
            node = todo.pop()
            self.expand(node)
            for child in node.children:
                if id(child) not in seen:
                    seen.add(id(child))
                    todo.append(child)

    def resolve(self, node: Node, ref: str, keyword: str) -> Node:
        try:
            resolved = node.resolver.lookup(ref)
        except Exception as err:
            raise ConfigError(
                f"cannot resolve {keyword} {ref!r} at {node.path or '/'}: only references inside the schema "
                f"(and the bundled metaschemas) are supported, nothing is fetched ({type(err).__name__})"
            ) from None
        return self.node(resolved.contents, resolved.resolver, f"{node.path}/{keyword}", entered=True)

    # --- alternatives ---------------------------------------------------------------------

    def alt(self, atoms, checks) -> Alt:
        atoms = tuple(sorted(set(atoms), key=id))
        checks = tuple(sorted(set(checks), key=id))
        key = (tuple(map(id, atoms)), tuple(map(id, checks)))
        found = self.interned.get(key)
        if found is None:
            found = Alt(self, atoms, checks)
            self.interned[key] = found
        return found

    def product(self, left: tuple[Alt, ...], right: tuple[Alt, ...], node: Node | None) -> tuple[Alt, ...]:
        """Conjunction of two disjunctions; too large a product keeps ``left`` and checks ``node``."""
        if len(left) * len(right) > MAX_ALTERNATIVES and node is not None:
            self.approximations.append(f"{node.path or '/'}: {len(left) * len(right)} alternatives")
            return tuple(self.alt(a.atoms, a.checks + (node,)) for a in left)
        out = []
        for a in left:
            for b in right:
                merged = self.alt(a.atoms + b.atoms, a.checks + b.checks)
                if merged.kmask:
                    out.append(merged)
        return tuple(dict.fromkeys(out))

    def conjunction(self, nodes: list[Node]) -> tuple[Alt, ...]:
        alts = (self.true_alt,)
        for node in nodes:
            alts = self.product(alts, self.expand(node), node)
            if not alts:
                break
        return alts

    def expand(self, node: Node) -> tuple[Alt, ...]:
        if node.alts is not None:
            return node.alts
        schema = node.schema
        if schema is True:
            node.alts = (self.true_alt,)
            return node.alts
        if schema is False:
            node.alts = ()
            return node.alts
        if id(node) in self.expanding:  # recursion through applicators: checked at completion
            self.approximations.append(f"{node.path or '/'}: recursive applicator")
            return (self.alt((), (node,)),)
        self.expanding.add(id(node))
        try:
            alts = self._expand(node, schema)
        finally:
            self.expanding.discard(id(node))
        node.alts = alts
        return alts

    def _expand(self, node: Node, schema: dict) -> tuple[Alt, ...]:
        active = self.validators
        path = node.path
        if self.legacy_ref and isinstance(schema.get("$ref"), str):
            target = self.resolve(node, schema["$ref"], "$ref")
            node.children.append(target)
            return self.expand(target)
        for key in schema:
            if key not in active and key not in _ANNOTATIONS:
                self.unknown_keywords.add(key)
        inexact = False
        for key in schema:
            if key in active and key not in NATIVE and key != "dependencies":
                self.completion_only.add(key)
                inexact = True
        if "dependencies" in schema and "dependencies" in active:
            if any(isinstance(v, (dict, bool)) for v in schema["dependencies"].values()):
                self.completion_only.add("dependencies")
                inexact = True
        if "$dynamicRef" in schema or "$recursiveRef" in schema:
            self.dynamic = True
        atom = self.atom(node, schema)
        alts = (self.alt((atom,) if atom is not None else (), (node,) if inexact else ()),)
        if not alts[0].kmask:
            return ()

        def sub(value, where):
            child = self.node(value, node.resolver, f"{path}/{where}")
            node.children.append(child)
            return child

        if "$ref" in schema and "$ref" in active and isinstance(schema["$ref"], str):
            target = self.resolve(node, schema["$ref"], "$ref")
            node.children.append(target)
            alts = self.product(alts, self.expand(target), target)
        for kw in ("$dynamicRef", "$recursiveRef"):
            if kw in schema and kw in active and isinstance(schema[kw], str):
                # resolved statically only to surface unresolvable references now
                node.children.append(self.resolve(node, schema[kw], kw))
        if "allOf" in schema and "allOf" in active:
            for i, s in enumerate(schema["allOf"]):
                child = sub(s, f"allOf/{i}")
                alts = self.product(alts, self.expand(child), child)
        for kw in ("anyOf", "oneOf"):
            if kw in schema and kw in active:
                branches: list[Alt] = []
                for i, s in enumerate(schema[kw]):
                    branches.extend(self.expand(sub(s, f"{kw}/{i}")))
                alts = self.product(alts, tuple(dict.fromkeys(branches)), node)
        if "if" in schema and "if" in active:
            # (if and then) or (not if and else): pruned as (if and then) or else, which is
            # implied by it; without else nothing can be pruned (not if is unconstrained).
            cond = sub(schema["if"], "if")
            then = sub(schema["then"], "then") if "then" in schema else None
            other = sub(schema["else"], "else") if "else" in schema else None
            if other is not None:
                left = self.expand(cond)
                if then is not None:
                    left = self.product(left, self.expand(then), then)
                branches = tuple(dict.fromkeys(left + self.expand(other)))
                alts = self.product(alts, branches, node)
        for kw in ("not", "contains", "unevaluatedProperties", "unevaluatedItems", "additionalItems"):
            # compiled so that references inside them are resolved now
            if kw in schema and kw in active and isinstance(schema[kw], (dict, bool)):
                sub(schema[kw], kw)
        for kw in ("dependentSchemas", "dependencies"):
            if kw in schema and kw in active:
                for k, s in schema[kw].items():
                    if isinstance(s, (dict, bool)):
                        sub(s, f"{kw}/{k}")
        return tuple(a for a in alts if a.kmask)

    # --- atoms ----------------------------------------------------------------------------

    def atom(self, node: Node, schema: dict) -> Atom | None:
        active = self.validators
        path = node.path
        a = Atom()
        used = False

        def has(kw):
            return kw in schema and kw in active

        def sub(value, where):
            child = self.node(value, node.resolver, f"{path}/{where}")
            node.children.append(child)
            return child

        if has("type"):
            types = schema["type"]
            types = [types] if isinstance(types, str) else list(types)
            mask = 0
            for t in types:
                mask |= TYPE_KINDS.get(t, 0)
            a.kmask = mask
            a.int_only = "integer" in types and "number" not in types
            used = True
        sets = []
        if has("enum"):
            sets.append(frozenset(canon(v) for v in schema["enum"]))
        if has("const"):
            sets.append(frozenset([canon(schema["const"])]))
        if sets:
            allowed = frozenset.intersection(*sets)
            a.enum_set = allowed
            a.enum_strs = tuple(sorted(k[1] for k in allowed if k[0] == "s"))
            a.kmask &= _canon_kinds_mask(allowed)
            used = True
        # strings
        if has("minLength"):
            a.smin = _count(schema["minLength"])
            used = True
        if has("maxLength"):
            a.smax = _count(schema["maxLength"])
            used = True
        if has("pattern"):
            exact, partial = _compile_re(schema["pattern"], f"{path or '/'} pattern")
            a.patterns = ((schema["pattern"], exact, partial),)
            used = True
        if has("format") and self.format_checker is not None:
            name = schema["format"]
            if isinstance(name, str) and name not in self.format_checker.checkers:
                self.unchecked_formats.add(name)
            if isinstance(name, str) and name in self.format_checker.checkers:
                prefix = FORMAT_PREFIXES.get(name)
                compiled = _regex.compile(prefix, _regex.ASCII | _regex.DOTALL) if prefix else None
                a.formats = ((name, compiled),)
                used = True
        # numbers
        nums = []
        if self.draft <= 4:
            if has("minimum"):
                nums.append(("xmin" if schema.get("exclusiveMinimum") is True else "min", schema["minimum"]))
            if has("maximum"):
                nums.append(("xmax" if schema.get("exclusiveMaximum") is True else "max", schema["maximum"]))
        else:
            for kw, op in (
                ("minimum", "min"),
                ("maximum", "max"),
                ("exclusiveMinimum", "xmin"),
                ("exclusiveMaximum", "xmax"),
            ):
                if has(kw) and isinstance(schema[kw], (int, float)) and not isinstance(schema[kw], bool):
                    nums.append((op, schema[kw]))
        a.nums = tuple(nums)
        if has("multipleOf"):
            a.mults = (schema["multipleOf"],)
        used = used or bool(nums) or bool(a.mults)
        # objects
        if has("properties"):
            a.props = {k: sub(v, f"properties/{_escape(k)}") for k, v in schema["properties"].items()}
            a.names = tuple(sorted(a.props))
            a.has_obj = True
        if has("patternProperties"):
            pprops = []
            for pattern, s in schema["patternProperties"].items():
                exact, partial = _compile_re(pattern, f"{path or '/'} patternProperties")
                pprops.append((pattern, exact, partial, sub(s, f"patternProperties/{_escape(pattern)}")))
            a.pprops = tuple(pprops)
            a.has_obj = True
        if has("additionalProperties"):
            a.additional = sub(schema["additionalProperties"], "additionalProperties")
            a.restricted = schema["additionalProperties"] is False
            a.has_obj = True
        if has("required") and isinstance(schema["required"], list):
            a.required = frozenset(schema["required"])
            a.has_obj = True
        if has("minProperties"):
            a.pmin = _count(schema["minProperties"])
            a.has_obj = True
        if has("maxProperties"):
            a.pmax = _count(schema["maxProperties"])
            a.has_obj = True
        if has("propertyNames"):
            a.pnames = sub(schema["propertyNames"], "propertyNames")
            a.has_obj = True
        deps = []
        if has("dependentRequired"):
            deps.extend((k, frozenset(v)) for k, v in schema["dependentRequired"].items())
        if has("dependencies"):
            for k, v in schema["dependencies"].items():
                if isinstance(v, list):
                    deps.append((k, frozenset(v)))
                elif isinstance(v, str):  # draft 3 form, accepted by some validators
                    deps.append((k, frozenset([v])))
        if deps:
            a.depreq = tuple(deps)
            a.has_obj = True
        # arrays
        if has("prefixItems"):
            a.prefix = tuple(sub(s, f"prefixItems/{i}") for i, s in enumerate(schema["prefixItems"]))
            a.has_arr = True
        if has("items"):
            items = schema["items"]
            if isinstance(items, list):  # draft <= 2019-09 tuple form
                a.prefix = tuple(sub(s, f"items/{i}") for i, s in enumerate(items))
                if has("additionalItems"):
                    a.rest = sub(schema["additionalItems"], "additionalItems")
            else:
                a.rest = sub(items, "items")
            a.has_arr = True
        if has("minItems"):
            a.imin = _count(schema["minItems"])
            a.has_arr = True
        if has("maxItems"):
            a.imax = _count(schema["maxItems"])
            a.has_arr = True
        if has("uniqueItems") and schema["uniqueItems"] is True:
            a.unique = True
            a.has_arr = True
        used = used or a.has_obj or a.has_arr
        node.atom = a if used else None
        return node.atom

    # --- exact checks ---------------------------------------------------------------------

    def validator_for(self, node: Node):
        if node.validator is None:
            node.validator = self.root_validator.evolve(schema=node.schema, _resolver=node.resolver)
        return node.validator

    def run_checks(self, checks: tuple[Node, ...], value) -> bool:
        """Validate a completed value against subschemas (with `jsonschema`).

        Skipped (True) when the schema uses dynamic references, whose meaning depends on the
        path from the root: the final validation of the whole document decides then.
        """
        if not checks or self.dynamic:
            return True
        for node in checks:
            try:
                if not self.validator_for(node).is_valid(value):
                    return False
            except Exception:
                self.check_errors += 1
                return False
        return True


_ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "id",
        "$anchor",
        "$dynamicAnchor",
        "$recursiveAnchor",
        "$vocabulary",
        "$comment",
        "$defs",
        "definitions",
        "title",
        "description",
        "default",
        "examples",
        "example",
        "readOnly",
        "writeOnly",
        "deprecated",
        "contentMediaType",
        "contentEncoding",
        "contentSchema",
        "then",
        "else",
        "minContains",
        "maxContains",
    }
)


def _count(value) -> int:
    """A non-negative integer keyword value (metaschemas allow 2.0 for 2)."""
    return int(value)


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")
