"""A Lark grammar of SQLite SELECT statements over one database schema (used by ``Sql``).

The grammar knows the schema: a table in FROM must be a table of the database, a column a
column of some table of the database (which table is checked by SQLite at the end, when the
whole query is prepared). Everything else follows SQLite's SELECT syntax:

* ``SELECT [DISTINCT|ALL] ... FROM ... [WHERE] [GROUP BY [HAVING]]`` with compound
  ``UNION [ALL] | INTERSECT | EXCEPT``, ``ORDER BY ... [ASC|DESC] [NULLS FIRST|LAST]``,
  ``LIMIT n [OFFSET m | , m]``;
* joins (``,``, ``[NATURAL] [LEFT|RIGHT|FULL [OUTER]|INNER|CROSS] JOIN ... ON | USING``),
  subqueries in FROM, IN, EXISTS and as values;
* expressions: arithmetic, comparison, ``LIKE/GLOB/REGEXP/MATCH [ESCAPE]``, ``BETWEEN``,
  ``IN``, ``IS [NOT] [DISTINCT FROM]``, ``ISNULL/NOTNULL/NOT NULL``, ``CASE``, ``CAST``,
  ``COLLATE``, function calls (any name: SQLite checks it), ``count(*)``, ``DISTINCT``
  arguments, ``FILTER (WHERE ...)``; literals (numbers, '...' and "..." strings, blobs,
  NULL/TRUE/FALSE/CURRENT_*), row values.

Names may be written bare (when SQLite allows it), or quoted "x", `x`, [x]; keywords and
names are case-insensitive, as in SQLite. An alias without ``AS`` must be separated from what
precedes it by whitespace (so ``FROM singers`` is not read as ``singer`` aliased ``s``). Aliases: a table alias (``AS T1`` or bare) may
qualify columns anywhere (it is usually declared after its first use, so any identifier is
accepted as a qualifier); a result-column alias may be used unqualified in ORDER BY, GROUP BY
and HAVING. Whitespace and comments are free between tokens (``%ignore``); gluing two words
together passes the grammar and fails when SQLite prepares the finished query.

Not in the language: ``WITH`` (common table expressions define tables and columns the schema
does not have), table-valued functions in FROM, bound parameters (``?``: a query with one
cannot be prepared without values), and statements other than SELECT.
"""

from __future__ import annotations

import re

_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")

def _lark_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def name_alternatives(name: str) -> list[str]:
    """Lark expressions for every way SQL can spell a schema name."""
    out = []
    if _BARE.fullmatch(name):
        # even a keyword: SQLite reads some keywords as names, and it has the last word
        out.append(_lark_string(name) + "i")
    out.append(_lark_string('"' + name.replace('"', '""') + '"') + "i")
    out.append(_lark_string("`" + name.replace("`", "``") + "`") + "i")
    if "]" not in name:
        out.append(_lark_string("[" + name + "]") + "i")
    return out


_TEMPLATE = r"""
start: select_stmt ";"?

select_stmt: select_core (compound_op select_core)* order_by? limit?
compound_op: UNION ALL? | INTERSECT | EXCEPT
select_core: SELECT (DISTINCT | ALL)? result_column ("," result_column)* from_clause? where_clause? group_by? having? window_clause?
    | VALUES "(" exprs ")" ("," "(" exprs ")")*
result_column: "*" | qualifier "." "*" | expr (AS column_alias | BARE_ALIAS)?
column_alias: IDENT | STRING
from_clause: FROM join_source
join_source: table_or_subquery (join_op table_or_subquery join_constraint?)*
join_op: "," | NATURAL? (LEFT OUTER? | RIGHT OUTER? | FULL OUTER? | INNER | CROSS)? JOIN
join_constraint: ON expr | USING "(" column_name ("," column_name)* ")"
table_or_subquery: table_ref (AS table_alias | BARE_ALIAS)? (INDEXED BY IDENT | NOT INDEXED)?
    | "(" select_stmt ")" (AS table_alias | BARE_ALIAS)?
    | "(" join_source ")" (AS table_alias | BARE_ALIAS)?
table_ref: (schema_name ".")? table_name
table_alias: IDENT
where_clause: WHERE expr
group_by: GROUP BY expr_a ("," expr_a)*
having: HAVING expr_a
window_clause: WINDOW IDENT AS window_def ("," IDENT AS window_def)*
order_by: ORDER BY ordering_term ("," ordering_term)*
ordering_term: expr_a (COLLATE IDENT)? (ASC | DESC)? (NULLS (FIRST | LAST))?
limit: LIMIT expr ((OFFSET | ",") expr)?

exprs: expr ("," expr)*

// expressions: "expr" knows schema columns; "expr_a" also result-column aliases
expr: _expr{column_ref}
expr_a: _expr{alias_or_column}
alias_or_column: column_ref | IDENT

_expr{ref}: or_expr{ref}
or_expr{ref}: and_expr{ref} (OR and_expr{ref})*
and_expr{ref}: not_expr{ref} (AND not_expr{ref})*
not_expr{ref}: NOT not_expr{ref} | predicate{ref}
predicate{ref}: value{ref} (comp_op value{ref})*
    | value{ref} NOT? (LIKE | GLOB | REGEXP | MATCH) value{ref} (ESCAPE value{ref})?
    | value{ref} NOT? BETWEEN value{ref} AND value{ref}
    | value{ref} NOT? IN "(" (select_stmt | in_list{ref})? ")"
    | value{ref} NOT? IN table_ref
    | value{ref} IS NOT? (DISTINCT FROM)? value{ref}
    | value{ref} (ISNULL | NOTNULL | NOT NULL)
in_list{ref}: _expr{ref} ("," _expr{ref})*
comp_op: "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">="
value{ref}: term{ref} (binary_op term{ref})*
binary_op: "+" | "-" | "*" | "/" | "%" | "||" | "&" | "|" | "<<" | ">>" | "->" | "->>"
term{ref}: unary_op* primary{ref} (COLLATE IDENT)?
unary_op: "-" | "+" | "~"
primary{ref}: literal
    | ref
    | function_call{ref}
    | "(" _expr{ref} ("," _expr{ref})* ")"
    | "(" select_stmt ")"
    | NOT? EXISTS "(" select_stmt ")"
    | CASE _expr{ref}? (WHEN _expr{ref} THEN _expr{ref})+ (ELSE _expr{ref})? END
    | CAST "(" _expr{ref} AS type_name ")"
function_call{ref}: function_name "(" (DISTINCT? _expr{ref} ("," _expr{ref})* (ORDER BY _expr{ref} (ASC|DESC)? ("," _expr{ref} (ASC|DESC)?)*)? | "*")? ")" filter{ref}? over_clause?
filter{ref}: FILTER "(" WHERE _expr{ref} ")"
over_clause: OVER (IDENT | window_def)
window_def: "(" IDENT? (PARTITION BY exprs)? (ORDER BY ordering_term ("," ordering_term)*)? frame_spec? ")"
frame_spec: (RANGE | ROWS | GROUPS) (BETWEEN frame_bound AND frame_bound | frame_bound)
frame_bound: UNBOUNDED (PRECEDING | FOLLOWING) | CURRENT ROW | expr (PRECEDING | FOLLOWING)
function_name: IDENT
type_name: IDENT+ ("(" NUMBER ("," NUMBER)? ")")?

column_ref: column_name | qualifier "." column_name | schema_name "." table_name "." column_name
qualifier: table_name | IDENT
literal: NUMBER | STRING | BLOB | NULL | TRUE | FALSE | CURRENT_DATE | CURRENT_TIME | CURRENT_TIMESTAMP

NUMBER: /(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?/ | /0[xX][0-9a-fA-F]+/
STRING: /'([^']|'')*'/ | /"([^"]|"")*"/
BLOB: /[xX]'([0-9a-fA-F][0-9a-fA-F])*'/
IDENT: /[A-Za-z_][A-Za-z0-9_$]*/ | /"([^"]|"")+"/ | /`([^`]|``)+`/ | /\[[^\]]+\]/
// an alias without AS: a bare word must be separated from what precedes it
BARE_ALIAS: /[ \t\r\n\f]+[A-Za-z_][A-Za-z0-9_$]*/ | /[ \t\r\n\f]*("([^"]|"")+"|`([^`]|``)+`|\[[^\]]+\]|'([^']|'')*')/

SELECT: "select"i
DISTINCT: "distinct"i
ALL: "all"i
FROM: "from"i
WHERE: "where"i
GROUP: "group"i
BY: "by"i
HAVING: "having"i
ORDER: "order"i
LIMIT: "limit"i
OFFSET: "offset"i
UNION: "union"i
INTERSECT: "intersect"i
EXCEPT: "except"i
AS: "as"i
JOIN: "join"i
NATURAL: "natural"i
LEFT: "left"i
RIGHT: "right"i
FULL: "full"i
OUTER: "outer"i
INNER: "inner"i
CROSS: "cross"i
ON: "on"i
USING: "using"i
AND: "and"i
OR: "or"i
NOT: "not"i
LIKE: "like"i
GLOB: "glob"i
REGEXP: "regexp"i
MATCH: "match"i
ESCAPE: "escape"i
BETWEEN: "between"i
IN: "in"i
IS: "is"i
ISNULL: "isnull"i
NOTNULL: "notnull"i
NULL: "null"i
TRUE: "true"i
FALSE: "false"i
EXISTS: "exists"i
CASE: "case"i
WHEN: "when"i
THEN: "then"i
ELSE: "else"i
END: "end"i
CAST: "cast"i
COLLATE: "collate"i
ASC: "asc"i
DESC: "desc"i
NULLS: "nulls"i
FIRST: "first"i
LAST: "last"i
VALUES: "values"i
INDEXED: "indexed"i
FILTER: "filter"i
OVER: "over"i
PARTITION: "partition"i
WINDOW: "window"i
RANGE: "range"i
ROWS: "rows"i
GROUPS: "groups"i
UNBOUNDED: "unbounded"i
PRECEDING: "preceding"i
FOLLOWING: "following"i
CURRENT: "current"i
ROW: "row"i
CURRENT_DATE: "current_date"i
CURRENT_TIME: "current_time"i
CURRENT_TIMESTAMP: "current_timestamp"i

%import common.WS
%ignore WS
COMMENT: /--[^\n]*/ | /\/\*([^*]|\*+[^*\/])*\*+\//
%ignore COMMENT
"""


def schema_grammar(tables: dict[str, list[str]], schema_names: tuple[str, ...] = ("main",)) -> str:
    """The Lark grammar of SELECT statements over ``tables`` ({table: [column, ...]})."""
    table_alts: list[str] = []
    for table in sorted(tables):
        table_alts.extend(name_alternatives(table))
    columns = sorted({c for cols in tables.values() for c in cols} | {"rowid", "oid", "_rowid_"})
    column_alts: list[str] = []
    for column in columns:
        column_alts.extend(name_alternatives(column))
    schema_alts: list[str] = []
    for name in schema_names:
        schema_alts.extend(name_alternatives(name))
    lines = [
        _TEMPLATE,
        "table_name: " + "\n    | ".join(table_alts),
        "column_name: " + "\n    | ".join(column_alts),
        "schema_name: " + "\n    | ".join(schema_alts),
    ]
    return "\n".join(lines) + "\n"
