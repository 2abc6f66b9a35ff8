"""Context-free grammars and SQL.

``grammar``: the :class:`Grammar` constraint (llguidance's Earley parser) and its checker's
token masks; ``compile``: a Lark grammar rewritten over single characters, so that no lexer
decides token boundaries; ``sql``: :class:`Sql`, a grammar plus SQLite's verdict on the
finished query; ``sql_schema``: a grammar built from a database's tables.
"""

from .grammar import Grammar
from .sql import Sql

__all__ = ["Grammar", "Sql"]
