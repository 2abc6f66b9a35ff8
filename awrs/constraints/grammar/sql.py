"""Sql: SQLite SELECT queries valid for one database, checked on every prefix.

Prefixes are checked by a :class:`~awrs.constraints.grammar.grammar.Grammar` that knows the schema:
tables and columns must be names of the database (see :mod:`awrs.constraints.grammar.sql_schema` for
the syntax covered and how aliases are handled). By default that grammar is built from the
database itself; ``grammar=`` takes a Lark grammar instead (for example the per-database
grammars shipped with the Spider data, ``grammars/<db>.lark``; ``Sql.spider`` finds it).

A finished query is valid when the grammar accepts it *and* SQLite prepares it on a read-only
connection: the file is opened with ``mode=ro``, an authorizer allows reading only, and the
statement is compiled with ``EXPLAIN`` (which lists the program without running the query), so
nothing is ever written or executed. Preparing catches what a context-free grammar cannot: a
column of a table that is not in FROM, an unknown function, a wrong number of arguments.

State: ``(grammar state, text so far)``; the text is needed only for the final prepare.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import numpy as np

from ...errors import ConfigError
from ..base import DEAD, Constraint, State
from ..checker import Checker
from .grammar import GRAMMAR_MASK_COST, Grammar
from .sql_lookahead import names_missing_column
from .sql_schema import schema_grammar

if TYPE_CHECKING:
    from ...vocab import Vocabulary

PREPARE_CACHE_SIZE = 4096
DEFAULT_MAX_WHITESPACE = 32
DEFAULT_LOOKAHEAD_PENALTY = 5.0

_ALLOWED_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}


def _authorizer(action, arg1, arg2, dbname, source):
    if action in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def open_read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot write: URI ``mode=ro`` and an authorizer that allows reads only."""
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    conn.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()  # fails here if not SQLite
    conn.set_authorizer(_authorizer)
    return conn


def read_schema(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """{table or view: [column, ...]} of a database (internal sqlite_ tables left out)."""
    conn.set_authorizer(None)
    try:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name"
            )
        ]
        tables = {}
        for name in names:
            if name.lower().startswith("sqlite_"):
                continue
            quoted = '"' + name.replace('"', '""') + '"'
            tables[name] = [row[1] for row in conn.execute(f"PRAGMA table_info({quoted})")]
        return tables
    finally:
        conn.set_authorizer(_authorizer)


class ReadOnlyDatabase:
    """A SQLite file opened so that nothing can be written; prepares queries without running them.

    Raises ConfigError when the file does not exist or is not a SQLite database.
    """

    def __init__(self, database_path: str | Path) -> None:
        path = Path(database_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"no SQLite database at {str(database_path)!r}")
        try:
            self._conn = open_read_only(path)
        except sqlite3.Error as err:
            raise ConfigError(f"{str(database_path)!r} is not a readable SQLite database: {err}") from None
        self.path = path
        self.tables = read_schema(self._conn)
        self._lock = threading.Lock()
        self._errors: OrderedDict[str, str | None] = OrderedDict()
        # Python's sqlite3 refuses a second statement (comments may follow the first)
        self.one_statement = not self.prepares("SELECT 1; SELECT 1")

    def prepares(self, query: str) -> bool:
        """Whether SQLite compiles ``query`` as one read-only statement (never runs it)."""
        return self.prepare_error(query) is None

    def prepare_error(self, query: str) -> str | None:
        """Why SQLite does not compile ``query`` (its message), or None if it does."""
        with self._lock:
            if query in self._errors:
                self._errors.move_to_end(query)
                return self._errors[query]
            try:
                self._conn.execute("EXPLAIN " + query).fetchone()
                error = None
            except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError) as err:
                error = str(err) or type(err).__name__
            self._errors[query] = error
            while len(self._errors) > PREPARE_CACHE_SIZE:
                self._errors.popitem(last=False)
            return error

    def close(self) -> None:
        self._conn.close()


class Sql(Constraint):
    """SELECT queries valid for the SQLite database at ``database_path``.

    Args:
        database_path: an existing SQLite file (opened read-only).
        grammar: Lark grammar text for the prefix check; default: built from the schema.
        start: the grammar's start rule.
        max_whitespace: the longest run of whitespace outside quotes and comments. SQLite
            reads any run as one separator, and a model that can neither end nor go on writes
            whitespace for ever otherwise (which also slows the grammar engine).
        lookahead_penalty: the log-weight penalty SMC's resampling gives a prefix whose whole
            words so far make a statement that SQLite rejects for a column its table lacks
            (:mod:`awrs.constraints.grammar.sql_lookahead`); a twist, so the target is the same
            for every value. 0 turns it off.
    """

    def __init__(
        self, database_path: str | Path, *, grammar: str | None = None, start: str = "start",
        max_whitespace: int = DEFAULT_MAX_WHITESPACE, lookahead_penalty: float = DEFAULT_LOOKAHEAD_PENALTY,
    ) -> None:
        if not isinstance(max_whitespace, int) or max_whitespace < 1:
            raise ConfigError(f"max_whitespace must be a positive integer, got {max_whitespace!r}")
        if not isinstance(lookahead_penalty, (int, float)) or not 0 <= lookahead_penalty < math.inf:
            raise ConfigError(f"lookahead_penalty must be a finite number >= 0 (0: off), got {lookahead_penalty!r}")
        self.max_whitespace = max_whitespace
        self.lookahead_penalty = float(lookahead_penalty)
        self.database = ReadOnlyDatabase(database_path)
        self.path = self.database.path
        self.tables = self.database.tables
        if grammar is None:
            if not self.tables:
                raise ConfigError(f"database {str(database_path)!r} has no tables")
            grammar = schema_grammar(self.tables)
            start = "start"
        self.grammar = Grammar(grammar, start)

    @classmethod
    def spider(cls, database_path: str | Path) -> Sql:
        """Use the Spider grammar for this database when the Spider layout has one.

        ``<root>/database/<db>/<db>.sqlite`` -> ``<root>/grammars/<db>.lark``; else the schema
        grammar.
        """
        path = Path(database_path)
        shipped = path.parent.parent.parent / "grammars" / f"{path.stem}.lark"
        grammar = shipped.read_text(encoding="utf-8") if shipped.is_file() else None
        return cls(path, grammar=grammar)

    def describe(self) -> str:
        return f"SQL for {self.path.name}"

    def __repr__(self) -> str:
        return f"Sql({str(self.path)!r})"

    def start(self):
        return (self.grammar.start(), b"")

    def advance(self, state: State, data: bytes) -> State:
        if not data:
            return state
        gstate, text = state
        if not self.text_allowed(text + data, len(text)):
            return DEAD
        after = self.grammar.advance(gstate, data)
        return DEAD if after is DEAD else (after, text + data)

    def text_allowed(self, text: bytes, new: int) -> bool:
        """The checks beyond the grammar's, on ``text`` whose bytes from ``new`` on are new."""
        if whitespace_run_too_long(text, new, self.max_whitespace):
            return False
        return b";" not in text or self.statement_may_end(text)

    def statement_may_end(self, text: bytes) -> bool:
        """Whether ``text`` may still become a valid query as far as its first ``;`` tells.

        The ``;`` fixes the first statement, and SQLite compiles that statement first: if it
        does not prepare, no continuation does. After it only whitespace and comments may
        follow (Python's sqlite3 takes one statement). So a model that wrote a query SQLite
        rejects stops there instead of writing ``;;;;`` to the token limit.
        """
        end = first_statement_end(text)
        if end is None:
            return True
        try:
            statement = text[:end + 1].decode("utf-8")
        except UnicodeDecodeError:
            return False
        if not self.database.prepares(statement):
            return False
        return not self.database.one_statement or only_comments_may_follow(text[end + 1:])

    def next_bytes(self, state: State):
        return self.grammar.next_bytes(state[0])

    def lookahead_log_psi(self, state: State) -> float:
        if not self.lookahead_penalty:
            return 0.0
        text = state[1].decode("utf-8", errors="ignore")
        return -self.lookahead_penalty if names_missing_column(text, self.database.prepare_error) else 0.0

    def min_completion_bytes(self, state: State) -> int:
        """A closing byte for each open parenthesis and for an open quoted string or name: a
        valid query is one SQLite prepares, so SQLite's own lexing must close them."""
        return unclosed_sql(state[1])

    def _checker(self, vocab: Vocabulary) -> Checker:
        return SqlChecker(self, vocab)

    def is_complete(self, state: State) -> bool:
        gstate, text = state
        if not self.grammar.is_complete(gstate):
            return False
        try:
            query = text.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return self.database.prepares(query)

    def prepares(self, query: str) -> bool:
        """Whether SQLite compiles ``query`` as one read-only statement (never runs it)."""
        return self.database.prepares(query)


_CLOSERS = {0x27: 0x27, 0x22: 0x22, 0x60: 0x60, 0x5B: 0x5D}  # ' " ` [ and what ends each


def _lex(text: bytes) -> tuple[int, bool, int | None, bool]:
    """(open parentheses, whether a quoted string or name is open, index of the first ``;``,
    whether a comment is open) as SQLite lexes ``text``: quotes doubled inside their own kind
    stay open; parentheses and ``;`` inside quotes and comments do not count."""
    depth, closer, end, commented, i, n = 0, None, None, False, 0, len(text)
    while i < n:
        byte = text[i]
        if closer is not None:
            if byte == closer:
                if closer != 0x5D and i + 1 < n and text[i + 1] == closer:
                    i += 1  # '' inside '...': an escaped quote
                else:
                    closer = None
        elif byte in _CLOSERS:
            closer = _CLOSERS[byte]
        elif byte == 0x28:
            depth += 1
        elif byte == 0x29:
            depth = max(depth - 1, 0)
        elif byte == 0x3B and end is None:
            end = i
        elif byte == 0x2D and text[i + 1:i + 2] == b"-":  # -- comment to the end of the line
            stop = text.find(b"\n", i)
            commented = stop < 0
            i = n if stop < 0 else stop
        elif byte == 0x2F and text[i + 1:i + 2] == b"*":  # /* comment */
            stop = text.find(b"*/", i + 2)
            commented = stop < 0
            i = n if stop < 0 else stop + 1
        i += 1
    return depth, closer is not None, end, commented


def unclosed_sql(text: bytes) -> int:
    """Open parentheses plus one for an open quoted string or name, as SQLite lexes ``text``."""
    depth, quoted, _, _ = _lex(text)
    return depth + quoted


def first_statement_end(text: bytes) -> int | None:
    """Index of the ``;`` that ends the first statement of ``text``, or None."""
    return _lex(text)[2]


_SPACE = frozenset(b" \t\n\r\f\v")


def whitespace_run_too_long(text: bytes, start: int, limit: int) -> bool:
    """Whether a run of whitespace that reaches into ``text[start:]`` is longer than ``limit``
    bytes outside quotes and comments (where SQLite reads whitespace as one separator)."""
    i = start
    while i > 0 and text[i - 1] in _SPACE:
        i -= 1
    n = len(text)
    while i < n:
        if text[i] not in _SPACE:
            i += 1
            continue
        j = i
        while j < n and text[j] in _SPACE:
            j += 1
        if j - i > limit:
            _, quoted, _, commented = _lex(text[:i])
            if not (quoted or commented):
                return True
        i = j
    return False


def only_comments_may_follow(text: bytes) -> bool:
    """Whether ``text`` is whitespace and comments, or a prefix of such text."""
    i, n = 0, len(text)
    while i < n:
        byte = text[i]
        if byte in b" \t\n\r\f\v":
            i += 1
        elif text.startswith(b"--", i) or text[i:] == b"-":
            stop = text.find(b"\n", i)
            i = n if stop < 0 else stop + 1
        elif text.startswith(b"/*", i) or text[i:] == b"/":
            stop = text.find(b"*/", i + 2)
            i = n if stop < 0 else stop + 2
        else:
            return False
    return True


class SqlChecker(Checker):
    """The grammar's masks, less the tokens that end a statement SQLite does not prepare (or
    write past the end of one); the database is asked again at the end."""

    exact_masks = True
    mask_cost = GRAMMAR_MASK_COST

    def __init__(self, constraint: Sql, vocab: Vocabulary) -> None:
        super().__init__(constraint, vocab)
        self._grammar = constraint.grammar.compile(vocab)
        self.cheap_checks = self._grammar.cheap_checks
        self._sql = constraint
        tokens = vocab.tokens
        self._has_semicolon = np.array([b";" in data for data in tokens], dtype=bool)
        # per token: the whitespace it starts with, and its longest run after that
        self._leading_space = np.array([_leading_space(data) for data in tokens], dtype=np.int64)
        self._inner_space = np.array([_longest_space(data[lead:]) for data, lead
                                      in zip(tokens, self._leading_space.tolist())], dtype=np.int64)

    def accepts_token(self, state: State, token: int) -> bool:
        text = state[1]
        return (self._sql.text_allowed(text + self.vocab.tokens[token], len(text))
                and self._grammar.accepts_token(state[0], token))

    def token_mask(self, state: State) -> np.ndarray | None:
        mask = self._grammar.token_mask(state[0])
        if mask is None:
            return None
        text = state[1]
        limit = self._sql.max_whitespace
        suspect = ((_trailing_space(text) + self._leading_space[mask] > limit)
                   | (self._inner_space[mask] > limit))
        if b";" in text and first_statement_end(text) is not None:
            suspect[:] = True
        else:
            suspect |= self._has_semicolon[mask]
        tokens, n = self.vocab.tokens, len(text)
        rejected = [t for t in mask[suspect].tolist() if not self._sql.text_allowed(text + tokens[t], n)]
        return np.setdiff1d(mask, rejected, assume_unique=True) if rejected else mask


def _leading_space(data: bytes) -> int:
    return len(data) - len(data.lstrip(bytes(_SPACE)))


def _trailing_space(data: bytes) -> int:
    return len(data) - len(data.rstrip(bytes(_SPACE)))


def _longest_space(data: bytes) -> int:
    longest = run = 0
    for byte in data:
        run = run + 1 if byte in _SPACE else 0
        longest = max(longest, run)
    return longest
