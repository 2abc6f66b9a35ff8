"""JsonSchema: the JSON texts valid under a JSON Schema, checked incrementally, byte by byte.

``JsonSchema(schema)`` accepts exactly the JSON texts that the `jsonschema` package validates
against ``schema`` (with its format checker), and prunes prefixes as soon as they can no longer
become valid: wrong types, unknown or repeated property names, strings that break
``maxLength``/``pattern``/``enum``/``format``, numbers out of their sign range, arrays with too
many or repeated items, objects missing required properties at ``}``, branches of ``anyOf`` and
``oneOf`` (a set of live branch states), and more (see ``compile.py``). Keywords
that cannot be decided on prefixes are checked with `jsonschema` when the value they apply to
is complete; they are listed in :attr:`JsonSchema.completion_only`. The whole document is
always validated with `jsonschema` when the top-level value completes, so a complete text is
accepted exactly when it is valid.

Drafts: the ``$schema`` keyword picks the draft (4, 6, 7, 2019-09, 2020-12); without it,
``default_draft`` (2020-12 unless set). Draft 3 is refused. References must resolve inside the
schema (or to the bundled metaschemas): nothing is fetched, and a remote ``$ref`` is a
:class:`~awrs.errors.ConfigError`.

The texts, on top of the JSON grammar (RFC 8259) and the schema:

* ``whitespace="compact"`` (default): no insignificant whitespace at all, so a model cannot
  wander off into whitespace; the only way to write a value is the compact one
  (``json.dumps(v, separators=(",", ":"), ensure_ascii=False)`` writes such texts).
* ``whitespace="free"``: JSON whitespace (space, tab, LF, CR) is allowed wherever the grammar
  allows it, including before and after the top-level value, but at most ``max_whitespace``
  (default 16) whitespace bytes in a row, so whitespace cannot run forever.
* Objects may not repeat a property name (RFC 8259 leaves their meaning undefined).
* ``NaN``/``Infinity`` are not JSON and are rejected; nesting is limited to 64 levels.
* Strings follow Python's ``json`` module: escapes of lone surrogates are accepted.
* ``pattern`` and ``patternProperties`` use Python's ``re`` (as `jsonschema` does), not
  ECMA 262: ``\\d`` and ``\\w`` are Unicode-aware, and ``\\p{...}`` makes the schema invalid.
  Prefixes are matched with the `regex` package's partial matching (a timeout counts as alive).

States are :class:`~.lexer.JsonState` tuples (shared freely between particles): the lexer's
mode and progress, a linked stack of open containers, the live branches of the schema
(:mod:`.branches`), a rope of the bytes so far (used only for values that need exact
validation), the byte count and the current whitespace run. An advance costs the new bytes;
strings with a ``pattern`` are re-matched (partially) on their text so far.

Not here: the lexer (``lexer.py``), the branches (``branches.py``), schema compilation
(``compile.py``, ``nodes.py``), lexer constants (``values.py``), the ``next_bytes`` hint
(``hints.py``).
"""

from __future__ import annotations

import json
import warnings
from typing import Any

from ...errors import ConfigError
from ..base import DEAD, Constraint, State
from . import hints, lexer
from .branches import Branches
from .compile import Compiler
from .lexer import JsonState, number_value
from .values import (
    K_NUM, M_COLON, M_DONE, M_KEY, M_KEYSTR, M_LITERAL, M_NUMBER, M_STRING, M_VALUE, N_DOT, N_E,
    N_ESIGN, N_FINAL, N_MINUS, T_VAL,
)

WHITESPACE_POLICIES = ("compact", "free")
# bytes the current token still needs at least, by lexer mode (beyond closing the containers)
_TOKEN_REST = {M_VALUE: 1, M_STRING: 1, M_KEYSTR: 3, M_KEY: 4, M_COLON: 2}
_NUMBER_NEEDS_DIGIT = frozenset({N_MINUS, N_DOT, N_E, N_ESIGN})
ROOT_CACHE = 512


class JsonSchema(Constraint):
    """JSON texts valid under a JSON Schema (drafts 4 to 2020-12), checked incrementally.

    Args:
        schema: the schema, as a dict, a boolean, or JSON text.
        whitespace: ``"compact"`` (no insignificant whitespace) or ``"free"`` (JSON whitespace
            between tokens, at most ``max_whitespace`` bytes in a row).
        max_whitespace: the longest whitespace run in ``"free"`` mode.
        default_draft: the draft of a schema without ``$schema``: 4, 6, 7, 2019 or 2020
            (also "2019-09", "2020-12", "draft7", ...).
        check_formats: assert ``format`` with the draft's format checker (the default; formats
            the installed checkers do not know are not checked), or treat it as an annotation
            (``False``, what drafts 2019-09 and 2020-12 specify by default).

    Attributes:
        completion_only: keywords of the schema that are enforced only when the value they
            apply to is complete (by `jsonschema`), not on prefixes.
        unknown_keywords: keywords that the schema's draft does not define; `jsonschema`
            ignores them, and so does this constraint.
        unchecked_formats: ``format`` values that no installed format checker knows for this
            draft (not enforced by `jsonschema` either; install ``jsonschema[format-nongpl]``
            for date-time, uri, ...).
        approximations: places where pruning is weaker than the schema (large disjunctions,
            recursion through applicators); the exact check happens at completion.
        draft: the draft used (4, 6, 7, 2019 or 2020).
    """

    def __init__(
        self,
        schema: Any,
        *,
        whitespace: str = "compact",
        max_whitespace: int = 16,
        default_draft: int | str = 2020,
        check_formats: bool = True,
    ) -> None:
        try:
            import jsonschema
            from jsonschema.validators import validator_for
            from referencing import Registry
            from referencing.jsonschema import DRAFT202012, specification_with
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ConfigError(
                f"JsonSchema needs the jsonschema package ({err}); pip install 'jsonschema[format-nongpl]'"
            ) from None
        if whitespace not in WHITESPACE_POLICIES:
            raise ConfigError(f"whitespace must be one of {WHITESPACE_POLICIES}, got {whitespace!r}")
        if not isinstance(max_whitespace, int) or max_whitespace < 1:
            raise ConfigError(f"max_whitespace must be a positive integer, got {max_whitespace!r}")
        if isinstance(schema, (str, bytes)):
            try:
                schema = json.loads(schema)
            except ValueError as err:
                raise ConfigError(f"the schema is not valid JSON: {err}") from None
        if not isinstance(schema, (dict, bool)):
            raise ConfigError(f"a JSON Schema must be an object or a boolean, got {type(schema).__name__}")
        try:
            schema = json.loads(json.dumps(schema))  # a private copy, and proof that it is JSON
        except (TypeError, ValueError) as err:
            raise ConfigError(f"the schema is not JSON data: {err}") from None
        except RecursionError:
            raise ConfigError("the schema is nested too deeply") from None
        self.schema = schema
        self.whitespace = whitespace
        self.max_whitespace = max_whitespace
        self.free_whitespace = whitespace == "free"

        drafts = {
            jsonschema.Draft4Validator: 4,
            jsonschema.Draft6Validator: 6,
            jsonschema.Draft7Validator: 7,
            jsonschema.Draft201909Validator: 2019,
            jsonschema.Draft202012Validator: 2020,
        }
        by_name = {str(v): k for k, v in drafts.items()}
        wanted = str(default_draft).lower().replace("draft", "").replace("-", "").strip()
        wanted = {"201909": "2019", "202012": "2020"}.get(wanted, wanted)
        if wanted not in by_name:
            raise ConfigError(f"default_draft must be one of 4, 6, 7, 2019, 2020; got {default_draft!r}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if isinstance(schema, dict) and not isinstance(schema.get("$schema", ""), str):
                raise ConfigError(f"invalid JSON Schema at $schema: it must be a draft's URI (a string), "
                                  f"got {type(schema['$schema']).__name__}")
            try:
                cls = validator_for(schema, default=by_name[wanted])
            except ValueError as err:  # jsonschema parses $schema as a URL first
                raise ConfigError(f"invalid JSON Schema at $schema: {schema.get('$schema')!r} is not a URI "
                                  f"({err}); use a draft's URI or leave $schema out") from None
        self.notes = [str(w.message) for w in caught]
        if cls is jsonschema.Draft3Validator:
            raise ConfigError("JSON Schema draft 3 is not supported (drafts 4 to 2020-12 are)")
        self.draft = drafts.get(cls, 2020)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cls.check_schema(schema)
        except jsonschema.SchemaError as err:
            where = "/".join(str(p) for p in err.absolute_path) or "/"
            message = " ".join(str(err.message).split())
            if len(message) > 160:
                message = message[:157] + "..."
            raise ConfigError(f"invalid JSON Schema at {where}: {message}") from None
        except Exception as err:  # e.g. a pattern that makes the metaschema's regex check fail
            raise ConfigError(f"invalid JSON Schema: {type(err).__name__}: {err}") from None

        try:
            specification = specification_with(cls.META_SCHEMA["$schema"], default=DRAFT202012)
        except Exception:
            specification = DRAFT202012
        self.check_formats = bool(check_formats)
        format_checker = cls.FORMAT_CHECKER if check_formats else None
        self._validator = cls(schema, registry=Registry(), format_checker=format_checker)
        from jsonschema_specifications import REGISTRY as METASCHEMAS

        resource = specification.create_resource(schema)
        resolver = METASCHEMAS.with_resource(uri=resource.id() or "", resource=resource).resolver_with_root(
            resource
        )
        self._compiler = Compiler(
            self.draft, frozenset(cls.VALIDATORS), specification, format_checker, self._validator
        )
        try:
            root = self._compiler.node(schema, resolver, "")
            self._compiler.compile_all(root)
            self._root_alts = self._compiler.expand(root)
        except RecursionError:
            raise ConfigError("the schema is nested too deeply to compile") from None
        self.true_alts = (self._compiler.true_alt,)
        self.completion_only = frozenset(self._compiler.completion_only)
        self.unknown_keywords = frozenset(self._compiler.unknown_keywords)
        self.unchecked_formats = frozenset(self._compiler.unchecked_formats)
        self.approximations = tuple(dict.fromkeys(self._compiler.approximations))
        self.validation_errors = 0  # documents whose validation raised (counted as invalid)
        self._root_cache: dict[Any, bool] = {}
        self._branches = Branches(self.true_alts, self._compiler.run_checks, self._validate_root)

    def describe(self) -> str:
        title = self.schema.get("title") if isinstance(self.schema, dict) else None
        name = f" {title!r}" if isinstance(title, str) else ""
        return f"json schema{name} (draft {self.draft}, {self.whitespace} whitespace)"

    def __repr__(self) -> str:
        return f"JsonSchema({json.dumps(self.schema)[:60]!r}, whitespace={self.whitespace!r})"

    # --- the exact check ------------------------------------------------------------------

    def validate(self, value: Any) -> bool:
        """Whether a Python JSON value is valid under the schema (`jsonschema`, formats checked)."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # `re`'s FutureWarnings on schema patterns
                return bool(self._validator.is_valid(value))
        except Exception:  # e.g. RecursionError, a pattern that `re` cannot run
            self.validation_errors += 1
            return False

    def _validate_root(self, key, value_of) -> bool:
        cache = self._root_cache
        known = cache.get(key)
        if known is None:
            try:
                value = value_of()
            except (ValueError, RecursionError):
                return False
            known = self.validate(value)
            if len(cache) >= ROOT_CACHE:
                cache.clear()
            cache[key] = known
        return known

    # --- states ---------------------------------------------------------------------------

    def start(self) -> JsonState:
        threads = tuple((T_VAL, alt, None, None) for alt in self._root_alts)
        return JsonState(M_VALUE, None, None, threads, None, 0, 0)

    def is_complete(self, state: State) -> bool:
        if state is DEAD:
            return False
        mode = state[0]
        if mode == M_DONE:
            return True
        if mode == M_NUMBER and state[2] is None:
            text, nstate = state[1]
            if nstate not in N_FINAL:
                return False
            value = number_value(text)
            if value is None:
                return False
            threads = self._branches.end_scalar(state[3], K_NUM, value)
            return threads is not DEAD and self._validate_root((K_NUM, text), lambda: value)
        return False

    def advance(self, state: State, data: bytes) -> State:
        if state is DEAD:
            return DEAD
        if not data:
            return state
        return lexer.advance(state, data, self._branches, self.free_whitespace, self.max_whitespace)

    def min_completion_bytes(self, state: State) -> int:
        """A lower bound from the syntax alone: a byte to close each open container, and what
        the current token still needs (a closing quote; after a property name ``:`` and a
        value; the rest of ``true``/``false``/``null``; a digit after ``-``, ``.`` or ``e``).
        Required properties and length bounds are not counted, so it never overestimates."""
        mode, sub, syn = state[0], state[1], state[2]
        depth = 0 if syn is None else syn[2]
        return depth + _TOKEN_REST.get(mode, 0) + (
            len(sub[0]) if mode == M_LITERAL else
            1 if mode == M_NUMBER and sub[1] in _NUMBER_NEEDS_DIGIT else 0)

    # --- hints ----------------------------------------------------------------------------

    def next_bytes(self, state: State) -> frozenset[int] | None:
        return hints.next_bytes(self, state)
