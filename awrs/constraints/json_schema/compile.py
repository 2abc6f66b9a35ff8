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

Not here: the pieces themselves (``nodes.py``), value helpers and lexer constants
(``values.py``), the JSON lexer and its states (``lexer.py``).
"""

from __future__ import annotations

import regex as _regex

from ...errors import ConfigError
from .nodes import Alt, Atom, Node
from .values import (
    FORMAT_PREFIXES,
    MAX_ALTERNATIVES,
    NATIVE,
    TYPE_KINDS,
    canon,
    canon_kinds_mask,
    compile_pattern,
)


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
                try:
                    resolver = resolver.in_subresource(self.specification.create_resource(schema))
                except ValueError as err:  # urljoin on an id that is no URL (draft 4 does not check)
                    raise ConfigError(f"invalid JSON Schema at {path or '/'}: its id is not a URI ({err}); "
                                      "fix the id or leave it out") from None
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
            a.kmask &= canon_kinds_mask(allowed)
            used = True
        # strings
        if has("minLength"):
            a.smin = _count(schema["minLength"])
            used = True
        if has("maxLength"):
            a.smax = _count(schema["maxLength"])
            used = True
        if has("pattern"):
            exact, partial = compile_pattern(schema["pattern"], f"{path or '/'} pattern")
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
                exact, partial = compile_pattern(pattern, f"{path or '/'} patternProperties")
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
