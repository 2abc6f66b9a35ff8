"""The compiled pieces of a JSON Schema: nodes, their assertions, and their alternatives.

A schema object is compiled (by :mod:`awrs.constraints.json_schema.compile`) into a
:class:`Node`. Its *assertion* keywords become one :class:`Atom`; its applicators expand into
a disjunction of conjunctions, the node's :class:`Alt` alternatives, which the incremental
checker (:mod:`awrs.constraints.json_schema.schema`) steps through. An alternative may
over-approximate the schema, never under-approximate it (see ``compile.py``).
"""

from __future__ import annotations

import bisect
from typing import Any, Protocol

from .values import (
    CACHE_LIMIT,
    K_ALL,
    K_NUM,
    K_STR,
    KIND_FIRST_BYTES,
    canon,
    has_prefix,
    multiple_of_fails,
    number_prefix_range,
    partial_full,
    partial_search,
)


class Compiler(Protocol):
    """What compiled pieces ask of the compiler that made them (json_schema_compile.Compiler)."""

    draft4_integers: bool
    format_checker: Any

    def conjunction(self, nodes: list) -> tuple: ...

    def run_checks(self, checks: tuple, value: Any) -> bool: ...


class Node:
    """One schema object (or boolean schema) under one base URI."""

    __slots__ = ("alts", "atom", "children", "path", "resolver", "schema", "validator")

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
        "additional",
        "depreq",
        "enum_set",
        "enum_strs",
        "formats",
        "has_arr",
        "has_obj",
        "imax",
        "imin",
        "int_only",
        "kmask",
        "mults",
        "names",
        "nums",
        "patterns",
        "pmax",
        "pmin",
        "pnames",
        "pprops",
        "prefix",
        "props",
        "required",
        "rest",
        "restricted",
        "smax",
        "smin",
        "unique",
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
        "__weakref__",
        "_items",
        "_key_alts",
        "_kids",
        "arr_atoms",
        "atoms",
        "checks",
        "compiler",
        "depreq",
        "enum_sets",
        "first_bytes",
        "fpartial",
        "has_pnames",
        "imax",
        "imin",
        "int_only",
        "kmask",
        "mults",
        "needs_value",
        "num_prefix_trivial",
        "nums",
        "obj_atoms",
        "pmax",
        "pmin",
        "required",
        "restricted_atoms",
        "sformats",
        "smax",
        "smin",
        "spatterns",
        "str_enums",
        "str_prefix_trivial",
        "str_prefix_length_only",
        "unique",
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
        # only the length can end a string prefix: every next character fits, or none does
        self.str_prefix_length_only = not (self.str_enums or any(p for _, _, p in self.spatterns) or fpartial)
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
        return self.value_ok(value)

    # --- containers -----------------------------------------------------------------------

    def obj_close_ok(self, seen: frozenset) -> bool:
        if len(seen) < self.pmin or not self.required <= seen:
            return False
        for key, deps in self.depreq:
            if key in seen and not deps <= seen:
                return False
        return True

    def value_ok(self, value) -> bool:
        """enum/const on a complete value."""
        if self.enum_sets:
            key = canon(value)
            for allowed in self.enum_sets:
                if key not in allowed:
                    return False
        return True


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
