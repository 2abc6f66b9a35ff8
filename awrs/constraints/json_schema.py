"""JsonSchema: the JSON texts valid under a JSON Schema, checked incrementally, byte by byte.

``JsonSchema(schema)`` accepts exactly the JSON texts that the `jsonschema` package validates
against ``schema`` (with its format checker), and prunes prefixes as soon as they can no longer
become valid: wrong types, unknown or repeated property names, strings that break
``maxLength``/``pattern``/``enum``/``format``, numbers out of their sign range, arrays with too
many or repeated items, objects missing required properties at ``}``, branches of ``anyOf`` and
``oneOf`` (a set of live branch states), and more (see ``json_schema_compile.py``). Keywords
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

States are tuples (shared freely between particles): the lexer's mode and sub-state, a linked
stack of open containers, the live *threads* (one per live branch: a linked stack of frames
``(tag, alternative, progress, parent)``), a rope of the bytes so far (used only for values
that need exact validation), the byte count and the current whitespace run. An advance costs
the new bytes; strings with a ``pattern`` are re-matched (partially) on their text so far.

Not here: schema compilation (``json_schema_compile.py``, ``json_schema_nodes.py``), lexer
constants (``json_schema_values.py``), the ``next_bytes`` hint (``json_schema_hints.py``).
"""

from __future__ import annotations

import itertools
import json
import warnings
from typing import Any

from ..errors import ConfigError
from . import json_schema_hints
from .base import DEAD, Constraint, State, split_utf8
from .json_schema_compile import Compiler
from .json_schema_values import (
    DIGITS,
    EMPTY,
    ESCAPES,
    FIRST_KIND,
    FRESH_STRING,
    HEX,
    K_ARR,
    K_NUM,
    K_OBJ,
    K_STR,
    LITERALS,
    M_AFTER,
    M_ARR_FIRST,
    M_COLON,
    M_DONE,
    M_KEY,
    M_KEYSTR,
    M_LITERAL,
    M_NUMBER,
    M_OBJ_FIRST,
    M_STRING,
    M_VALUE,
    N_DOT,
    N_E,
    N_ESIGN,
    N_EXP,
    N_FINAL,
    N_FRAC,
    N_INT,
    N_MINUS,
    N_ZERO,
    RUN,
    T_ARR,
    T_OBJ,
    T_VAL,
    WS,
    canon,
)

WHITESPACE_POLICIES = ("compact", "free")
MAX_DEPTH = 64
MAX_THREADS = 512  # more live branch states than this: stop pruning (the end still validates)
ROOT_CACHE = 512

JsonState = tuple


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
            cls = validator_for(schema, default=by_name[wanted])
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
        return (M_VALUE, None, None, threads, None, 0, 0)

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
            value = _number_value(text)
            if value is None:
                return False
            threads = self._end_scalar(state[3], K_NUM, value)
            return threads is not DEAD and self._validate_root((K_NUM, text), lambda: value)
        return False

    def advance(self, state: State, data: bytes) -> State:
        if state is DEAD:
            return DEAD
        if not data:
            return state
        mode, sub, syn, threads, rope, pos, ws = state
        free = self.free_whitespace
        max_ws = self.max_whitespace
        n = len(data)
        i = 0
        while i < n:
            if mode == M_STRING or mode == M_KEYSTR:
                chars, esc, tail, high = sub
                if esc:
                    b = data[i]
                    if esc == "\\":
                        if b == 0x75:  # u
                            esc = "u"
                        else:
                            ch = ESCAPES.get(b)
                            if ch is None:
                                return DEAD
                            chars += ch
                            esc = ""
                            high = False
                    else:
                        if b not in HEX:
                            return DEAD
                        esc += chr(b)
                        if len(esc) == 5:
                            cp = int(esc[1:], 16)
                            if high and 0xDC00 <= cp <= 0xDFFF:
                                chars = chars[:-1] + chr(
                                    0x10000 + ((ord(chars[-1]) - 0xD800) << 10) + (cp - 0xDC00)
                                )
                                high = False
                            else:
                                chars += chr(cp)
                                high = 0xD800 <= cp <= 0xDBFF
                            esc = ""
                    sub = (chars, esc, tail, high)
                    i += 1
                    continue
                m = RUN(data, i)
                if m is not None:
                    j = m.end()
                    piece = data[i:j]
                    if tail:
                        piece = tail + piece
                    try:
                        text = piece.decode("utf-8")
                        tail = b""
                    except UnicodeDecodeError:
                        split = split_utf8(piece)
                        if split is None:
                            return DEAD
                        text, tail = split
                    if text:
                        chars += text
                        high = False
                    sub = (chars, esc, tail, high)
                    i = j
                    continue
                if tail:  # an unfinished character followed by '"', '\' or a control byte
                    return DEAD
                b = data[i]
                if b == 0x5C:  # backslash
                    sub = (chars, "\\", tail, high)
                    i += 1
                    continue
                if b != 0x22:  # a raw control character
                    return DEAD
                i += 1
                if mode == M_KEYSTR:
                    threads = self._key_done(threads, chars)
                    if threads is DEAD:
                        return DEAD
                    mode, sub = M_COLON, None
                    continue
                ended = self._scalar_done(threads, syn, K_STR, chars, (K_STR, chars))
                if ended is DEAD:
                    return DEAD
                mode, threads = ended
                sub = None
                continue

            b = data[i]
            if mode == M_NUMBER:
                text, nstate = sub
                if b in DIGITS:
                    if nstate == N_MINUS:
                        nstate = N_ZERO if b == 0x30 else N_INT
                    elif nstate == N_ZERO:
                        return DEAD  # no leading zeros
                    elif nstate == N_DOT:
                        nstate = N_FRAC
                    elif nstate == N_E or nstate == N_ESIGN:
                        nstate = N_EXP
                elif b == 0x2E:  # .
                    if nstate != N_ZERO and nstate != N_INT:
                        return DEAD
                    nstate = N_DOT
                elif b == 0x65 or b == 0x45:  # e E
                    if nstate != N_ZERO and nstate != N_INT and nstate != N_FRAC:
                        return DEAD
                    nstate = N_E
                elif b == 0x2B or b == 0x2D:  # + -
                    if nstate != N_E:
                        return DEAD
                    nstate = N_ESIGN
                else:  # the number ends here; the byte is read again after it
                    if nstate not in N_FINAL:
                        return DEAD
                    value = _number_value(text)
                    if value is None:
                        return DEAD
                    ended = self._scalar_done(threads, syn, K_NUM, value, (K_NUM, text))
                    if ended is DEAD:
                        return DEAD
                    mode, threads = ended
                    sub = None
                    continue
                sub = (text + chr(b), nstate)
                i += 1
                continue

            if mode == M_LITERAL:
                rest, kind = sub
                if b != rest[0]:
                    return DEAD
                i += 1
                rest = rest[1:]
                if rest:
                    sub = (rest, kind)
                    continue
                value = LITERALS[kind][1]
                ended = self._scalar_done(threads, syn, kind, value, (kind, None))
                if ended is DEAD:
                    return DEAD
                mode, threads = ended
                sub = None
                continue

            if b in WS:
                if not free or ws >= max_ws:
                    return DEAD
                ws += 1
                i += 1
                continue
            ws = 0

            if mode == M_VALUE or mode == M_ARR_FIRST:
                kind = FIRST_KIND.get(b)
                if kind is None:
                    if mode == M_ARR_FIRST and b == 0x5D:  # ]
                        state = self._close(K_ARR, mode, sub, syn, threads, rope, data, pos, i)
                        if state is DEAD:
                            return DEAD
                        mode, sub, syn, threads = state
                        i += 1
                        continue
                    return DEAD
                threads = self._start_value(threads, kind)
                if threads is DEAD:
                    return DEAD
                if kind == K_OBJ or kind == K_ARR:
                    depth = 1 if syn is None else syn[2] + 1
                    if depth > MAX_DEPTH:
                        return DEAD
                    syn = (kind, pos + i, depth, syn)
                    mode = M_OBJ_FIRST if kind == K_OBJ else M_ARR_FIRST
                elif kind == K_STR:
                    mode, sub = M_STRING, FRESH_STRING
                elif kind == K_NUM:
                    mode = M_NUMBER
                    sub = (chr(b), N_MINUS if b == 0x2D else N_ZERO if b == 0x30 else N_INT)
                else:
                    mode, sub = M_LITERAL, (LITERALS[kind][0], kind)
                i += 1
                continue

            if mode == M_OBJ_FIRST or mode == M_KEY:
                if b == 0x22:
                    threads = self._start_key(threads)
                    if threads is DEAD:
                        return DEAD
                    mode, sub = M_KEYSTR, FRESH_STRING
                    i += 1
                    continue
                if mode == M_OBJ_FIRST and b == 0x7D:  # }
                    state = self._close(K_OBJ, mode, sub, syn, threads, rope, data, pos, i)
                    if state is DEAD:
                        return DEAD
                    mode, sub, syn, threads = state
                    i += 1
                    continue
                return DEAD

            if mode == M_COLON:
                if b != 0x3A:
                    return DEAD
                mode = M_VALUE
                i += 1
                continue

            if mode == M_AFTER:
                kind = syn[0]
                if b == 0x2C:  # ,
                    if threads:
                        threads = self._comma(threads)
                        if threads is DEAD:
                            return DEAD
                    mode = M_KEY if kind == K_OBJ else M_VALUE
                    i += 1
                    continue
                if (b == 0x7D and kind == K_OBJ) or (b == 0x5D and kind == K_ARR):
                    state = self._close(kind, mode, sub, syn, threads, rope, data, pos, i)
                    if state is DEAD:
                        return DEAD
                    mode, sub, syn, threads = state
                    i += 1
                    continue
                return DEAD

            return DEAD  # M_DONE: nothing but whitespace may follow

        # prefix checks on the unfinished value (once per advance, not per byte)
        if threads:
            if mode == M_STRING:
                threads = self._string_prefix(threads, sub)
            elif mode == M_KEYSTR:
                threads = self._key_prefix(threads, sub)
            elif mode == M_KEY:  # after a comma a name must follow: some name must be left
                threads = self._key_prefix(threads, ("", "", b"", False))
            elif mode == M_NUMBER:
                threads = self._number_prefix(threads, sub)
            if threads is DEAD:
                return DEAD
        return (mode, sub, syn, threads, (rope, data, pos), pos + n, ws)

    # --- thread events --------------------------------------------------------------------

    @staticmethod
    def _limit(new: list) -> tuple | None:
        if len(new) > 1:
            new = list(dict.fromkeys(new))
            if len(new) > MAX_THREADS:
                return None  # permissive from here on; the document is still validated at the end
        return tuple(new)

    def _start_value(self, threads, kind):
        if threads is None:
            return None
        new = []
        for t in threads:
            if t[0] == T_ARR:
                alt = t[1]
                index = t[2][0]
                if alt.imax is not None and index >= alt.imax:
                    continue
                kids = alt.item_alts(index) if alt.arr_atoms else self.true_alts
                parent = t
            else:
                kids = (t[1],)
                parent = t[3]
            for k in kids:
                if k.kmask & kind:
                    if kind == K_OBJ:
                        new.append((T_OBJ, k, EMPTY, parent))
                    elif kind == K_ARR:
                        new.append((T_ARR, k, (0, EMPTY if k.unique else None), parent))
                    else:
                        new.append((T_VAL, k, None, parent))
        return self._limit(new) if new else DEAD

    @staticmethod
    def _comma(threads):
        """A comma promises one more item or property: drop threads at maxItems/maxProperties."""
        new = []
        for t in threads:
            alt = t[1]
            if t[0] == T_ARR:
                if alt.imax is None or t[2][0] < alt.imax:
                    new.append(t)
            elif alt.pmax is None or len(t[2]) < alt.pmax:
                new.append(t)
        return tuple(new) if new else DEAD

    def _start_key(self, threads):
        if threads is None:
            return None
        new = tuple(t for t in threads if t[1].pmax is None or len(t[2]) < t[1].pmax)
        return new if new else DEAD

    def _key_done(self, threads, key: str):
        if threads is None:
            return None
        new = []
        true_alts = self.true_alts
        for t in threads:
            _, alt, seen, parent = t
            if key in seen:
                continue
            if alt.has_pnames and not alt.key_ok(key):
                continue
            kids = alt.child_alts(key) if alt.obj_atoms else true_alts
            if not kids:
                continue
            frame = (T_OBJ, alt, seen | {key}, parent)
            for k in kids:
                new.append((T_VAL, k, None, frame))
        return self._limit(new) if new else DEAD

    def _scalar_done(self, threads, syn, kind, value, root_key):
        """A string, number or literal just ended: check it on every thread; at the top level
        (no open container) validate the whole document. The new (mode, threads), or DEAD."""
        threads = self._end_scalar(threads, kind, value)
        if threads is DEAD:
            return DEAD
        if syn is not None:
            return M_AFTER, threads
        if not self._validate_root(root_key, lambda: value):
            return DEAD
        return M_DONE, ()

    def _end_scalar(self, threads, kind, value):
        """Check a completed string, number or literal on every thread, then pop its frame."""
        if threads is None:
            return None
        run_checks = self._compiler.run_checks
        kept = []
        for t in threads:
            alt = t[1]
            if kind == K_STR:
                if not alt.str_ok(value):
                    continue
            elif kind == K_NUM:
                if not alt.num_ok(value):
                    continue
            elif alt.enum_sets and not alt.value_ok(value):
                continue
            if alt.checks and t[3] is not None and not run_checks(alt.checks, value):
                continue
            kept.append(t)
        if not kept:
            return DEAD
        return self._pop(kept, lambda: value)

    def _pop(self, threads: list, value_of):
        """Return to the parent frames after a value completed (array index, uniqueItems)."""
        if threads[0][3] is None:  # the top-level value: every thread is at the root
            return ()
        key = None
        new = []
        for t in threads:
            parent = t[3]
            if parent[0] == T_ARR:
                index, unique = parent[2]
                if unique is not None:
                    if key is None:
                        key = canon(value_of())
                    if key in unique:
                        continue
                    unique = unique | {key}
                new.append((T_ARR, parent[1], (index + 1, unique), parent[3]))
            else:
                new.append(parent)
        if not new:
            return DEAD
        return self._limit(new)

    def _close(self, kind, mode, sub, syn, threads, rope, data, pos, i):
        """Close the innermost container at byte ``i`` of ``data``: (mode, sub, syn, threads)."""
        start = syn[1]
        cached: list = []

        def value_of():
            if not cached:
                cached.append(json.loads(_slice(rope, data, start, pos, i + 1).decode("utf-8")))
            return cached[0]

        if threads is not None:
            run_checks = self._compiler.run_checks
            kept = []
            for t in threads:
                _, alt, info, parent = t
                if kind == K_OBJ:
                    if not alt.obj_close_ok(info):
                        continue
                elif info[0] < alt.imin:
                    continue
                if alt.needs_value:
                    try:
                        value = value_of()
                    except (ValueError, RecursionError):
                        return DEAD
                    if alt.enum_sets and not alt.value_ok(value):
                        continue
                    if alt.checks and parent is not None and not run_checks(alt.checks, value):
                        continue
                kept.append(t)
            if not kept:
                return DEAD
            threads = self._pop(kept, value_of)
            if threads is DEAD:
                return DEAD
        parent = syn[3]
        if parent is None:
            text = _slice(rope, data, 0, pos, i + 1)
            if not self._validate_root(text, lambda: json.loads(text.decode("utf-8"))):
                return DEAD
            return (M_DONE, None, None, ())
        return (M_AFTER, None, parent, threads)

    # --- prefix checks at the end of an advance --------------------------------------------

    def _string_prefix(self, threads, sub):
        chars, esc, _, high = sub
        text = chars[:-1] if high else chars  # a high surrogate may still pair with the next escape
        count = len(chars)

        def alive(t, text, count):
            return t[1].str_prefix_trivial or t[1].str_prefix_ok(text, count)

        span = None if high else escape_span(esc)
        if span is None:
            new = tuple(t for t in threads if alive(t, text, count))
        else:  # inside an escape: some character it may still write must keep the string alive
            new = tuple(t for t in threads if some_char_fits(span, lambda c, t=t: alive(t, text + c, count + 1)))
        return new if new else DEAD

    def _key_prefix(self, threads, sub):
        chars, esc, _, high = sub
        text = chars[:-1] if high else chars

        def alive(t, text):
            return not (t[1].restricted_atoms or t[1].has_pnames) or t[1].key_prefix_ok(text, t[2])

        span = None if high else escape_span(esc)
        if span is None:
            new = tuple(t for t in threads if alive(t, text))
        else:
            new = tuple(t for t in threads if some_char_fits(span, lambda c, t=t: alive(t, text + c)))
        return new if new else DEAD

    def _number_prefix(self, threads, sub):
        text, nstate = sub
        new = tuple(t for t in threads if t[1].num_prefix_trivial or t[1].num_prefix_ok(text, nstate))
        return new if new else DEAD

    # --- hints ----------------------------------------------------------------------------

    def next_bytes(self, state: State) -> frozenset[int] | None:
        return json_schema_hints.next_bytes(self, state)


# Characters tried first for an unfinished escape, then the rest of its range.
_LIKELY_CHARS = tuple(range(0x20, 0x7F))
_LIKELY_SET = frozenset(_LIKELY_CHARS)


def escape_span(esc: str) -> tuple[int, int] | None:
    """The code points an unfinished escape may still write (None outside one): after a
    backslash any (``\\uXXXX``), after ``\\u`` and k hex digits the 16^(4-k) that share them."""
    if not esc:
        return None
    digits = esc[1:]  # esc is "\\" or "u" followed by the hex digits read so far
    width = 4 * (4 - len(digits))
    low = int(digits, 16) << width if digits else 0
    return low, low + (1 << width) - 1


def some_char_fits(span: tuple[int, int], fits) -> bool:
    """Whether ``fits(c)`` holds for some character c in ``span``, likely characters first.

    Surrogates are not tried: a span of only surrogates counts as fitting (they pair with a
    later escape). A span is at most 65,536 characters; a dead one is scanned whole (a few
    ms for a length limit, up to ~0.4 s for a regex), which happens only where the text could
    not be finished anyway, instead of leaving a prefix no token can continue.
    """
    low, high = span
    likely = [c for c in _LIKELY_CHARS if low <= c <= high]
    rest = (c for c in range(low, high + 1) if not (c in _LIKELY_SET or 0xD800 <= c <= 0xDFFF))
    tried = 0
    for cp in itertools.chain(likely, rest):
        if fits(chr(cp)):
            return True
        tried += 1
    return tried == 0


def _number_value(text: str):
    """The Python value json.loads gives a number (None where json.loads fails)."""
    try:
        if "." in text or "e" in text or "E" in text:
            return float(text)
        return int(text)
    except (ValueError, OverflowError):  # e.g. more digits than int() accepts
        return None


def _slice(rope, data: bytes, start: int, pos: int, end: int) -> bytes:
    """Bytes ``start:`` of the text: the rope (earlier advances) then ``data[:end]``."""
    if start >= pos:
        return data[start - pos : end]
    chunks = [data[:end]]
    node = rope
    while node is not None:
        prev, chunk, chunk_start = node
        if chunk_start <= start:
            chunks.append(chunk[start - chunk_start :])
            break
        chunks.append(chunk)
        node = prev
    chunks.reverse()
    return b"".join(chunks)
