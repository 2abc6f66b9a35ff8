"""Lark grammar text -> a character-level grammar for the llguidance Earley engine.

Lark's own loader reads the grammar (``%import common``, ``%ignore``, templates, ``?rule``,
``"kw"i``, ranges, priorities), so every Lark feature that changes the *language* is resolved
by Lark itself. This module then rewrites the result so that no lexing decision is left:

* every terminal becomes rules over single characters (its regex as an automaton, see
  :mod:`awrs.constraints.regex.dfa`): a literal is inlined as a sequence of character
  classes, an acyclic terminal becomes right-linear rules and a cyclic one (``/[a-z]+/``)
  left-linear rules, which Earley parsers run without long completion chains;
* ``%ignore`` terminals may occur before every terminal and at the end of the text (where
  Lark's Earley parser accepts them);
* rules that derive no text are removed; an empty string literal ``""`` (which Lark refuses
  and the shipped Spider grammars use) is read as the empty sequence.

The result is a plain context-free grammar whose language is the language of the Lark grammar
read as a context-free grammar over characters: each terminal stands for every text its regex
matches in full (Lark's Earley parser with ``lexer='dynamic_complete'``). Priorities only rank
parse trees, so they are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ...errors import ConfigError
from ..regex.dfa import DFA, Ranges, RegexUnsupported, compile_regex, literal_dfa, union_dfas


def strip_empty_literals(text: str) -> str:
    """Replace empty string literals ("" or ""i) outside strings, regexes and comments by nothing."""
    if '""' not in text:
        return text
    out = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            if text.startswith('""', i) and not text.startswith('"""', i):
                j = i + 2
                if (
                    j < n
                    and text[j] == "i"
                    and not (j + 1 < n and (text[j + 1].isalnum() or text[j + 1] == "_"))
                ):
                    j += 1
                out.append(" ")
                i = j
                continue
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif ch == "/" and i + 1 < n and text[i + 1] == "/":
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(text[i:j])
            i = j
        elif ch == "/":
            # a regex literal /.../flags, or a lone slash
            j = i + 1
            while j < n and text[j] not in "/\n":
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif ch == "#":
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(text[i:j])
            i = j
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def unclosed_literal(text: str) -> str | None:
    """Where a string or regex literal of Lark text never closes, or None.

    Lark's own grammar lexer matches literals with patterns that backtrack exponentially on an
    unclosed one full of backslashes (20 of them take seconds, 30 hours), so such text must be
    refused before it reaches Lark. The scan follows Lark's literal syntax: a string ends at an
    unescaped ``"`` on its line, a regex at an unescaped ``/`` (it may span lines), comments
    run to the end of the line."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "\"/" and not text.startswith("//", i):
            closing, j = ch, i + 1
            while j < n and text[j] != closing:
                if ch == '"' and text[j] == "\n":
                    break
                j += 2 if text[j] == "\\" and j + 1 < n and text[j + 1] != "\n" else 1
            if j >= n or text[j] != closing:
                line = text.count("\n", 0, i) + 1
                kind = "string" if ch == '"' else "regex"
                return f"the {kind} literal at line {line} is never closed ({text[i:i + 20]!r}...)"
            i = j + 1
        elif ch == "#" or text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        else:
            i += 1
    return None


def _one_line(message: str) -> str:
    lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
    return lines[0] if lines else "unknown error"


def load_lark(text: str, start: str):
    """Terminals, rules and ignored terminal names of a Lark grammar (Lark's own loader)."""
    try:
        from lark import exceptions as lark_exceptions
        from lark.load_grammar import load_grammar
    except ImportError as err:  # pragma: no cover
        raise ConfigError("Grammar needs the 'lark' package (pip install lark)") from err
    if not isinstance(text, str):
        raise ConfigError(f"a grammar must be a string of Lark text, got {type(text).__name__}")
    if not isinstance(start, str) or not start:
        raise ConfigError(f"the start rule must be a rule name, got {start!r}")
    unclosed = unclosed_literal(text)
    if unclosed is not None:
        raise ConfigError(f"invalid Lark grammar: {unclosed}")
    source = strip_empty_literals(text)
    try:
        grammar, _ = load_grammar(source, "<grammar>", [], False)
        terminals, rules, ignore = grammar.compile([start], set())
    except lark_exceptions.LarkError as err:
        raise ConfigError(f"invalid grammar: {_one_line(err)}") from None
    except OSError as err:
        raise ConfigError(
            f"invalid grammar: cannot import {err.filename or err}: {err.strerror or 'not found'}"
        ) from None
    except Exception as err:  # noqa: BLE001 - Lark raises assorted errors on malformed text
        detail = _one_line(err) if str(err) else ""
        raise ConfigError(f"invalid grammar: {type(err).__name__}{': ' + detail if detail else ''}") from None
    if not any(r.origin.name == start for r in rules):
        raise ConfigError(f"invalid grammar: no rule named {start!r}")
    return terminals, rules, ignore


def _char(c: int) -> str:
    return f"\\x{{{c:X}}}"


def char_class(ranges: Ranges) -> str:
    """An llguidance regex lexeme matching exactly one character of ``ranges``."""
    parts = []
    for lo, hi in ranges:
        parts.append(_char(lo) if lo == hi else f"{_char(lo)}-{_char(hi)}")
    return "/[" + "".join(parts) + "]/"


@dataclass
class CompiledGrammar:
    """The llguidance grammar text and what it was made from (for messages and tests)."""

    text: str
    start: str
    empty_language: bool = False
    terminals: dict[str, DFA] = field(default_factory=dict)
    ignore: tuple[str, ...] = ()


def _terminal_dfa(term) -> DFA:
    pattern = getattr(term, "pattern", None)
    if pattern is None:
        raise ConfigError(
            f"invalid grammar: terminal {term.name} has no definition (%declare is not supported)"
        )
    if getattr(pattern, "type", None) == "str" and set(pattern.flags) <= {"i"}:
        return literal_dfa(pattern.value, "i" in pattern.flags)
    regexp = pattern.to_regexp()
    try:
        return compile_regex(regexp)
    except RegexUnsupported as err:
        raise ConfigError(
            f"terminal {term.name} /{pattern.value}/ uses {err}, which a grammar terminal cannot express"
        ) from None
    except (re.error, OverflowError, RecursionError) as err:
        raise ConfigError(
            f"terminal {term.name}: invalid regex {pattern.value!r}: {_one_line(err)}"
        ) from None


class _Emitter:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.classes: dict[Ranges, str] = {}

    def chars(self, ranges: Ranges) -> str:
        """A rule for one character of ``ranges`` (one lexeme per distinct set, shared)."""
        name = self.classes.get(ranges)
        if name is None:
            name = self.classes[ranges] = f"c{len(self.classes)}"
        return name

    def rule(self, name: str, alternatives: list[list[str]]) -> None:
        if len(alternatives) > 2:
            alternatives = self._factor(name, alternatives)
        body = "\n    | ".join(" ".join(alt) if alt else '""' for alt in alternatives)
        self.lines.append(f"{name}: {body}")

    def _factor(self, name: str, alternatives: list[list[str]]) -> list[list[str]]:
        """Left-factor alternatives into a trie of rules (same language, far fewer items).

        Lark expands every ``x?`` and ``x*`` into copies of the whole alternative, so a rule
        with six optional clauses has dozens of alternatives that an Earley parser would all
        predict; after factoring it predicts one item per distinct first symbol.
        """
        end = ""
        trie: dict = {}
        for alt in alternatives:
            node = trie
            for sym in alt:
                node = node.setdefault(sym, {})
            node[end] = {}
        counter = [0]

        def alts_of(node: dict) -> list[list[str]]:
            out = []
            for sym, child in node.items():
                if sym == end:
                    out.append([])
                    continue
                seq = [sym]
                while len(child) == 1 and end not in child:
                    ((sym, child),) = child.items()
                    seq.append(sym)
                if set(child) != {end}:
                    counter[0] += 1
                    sub = f"{name}__f{counter[0]}"
                    sub_alts = alts_of(child)
                    body = "\n    | ".join(" ".join(a) if a else '""' for a in sub_alts)
                    self.lines.append(f"{sub}: {body}")
                    seq.append(sub)
                out.append(seq)
            return out

        return alts_of(trie)

    def text(self) -> str:
        lexemes = [f"{name}: {char_class(ranges)}" for ranges, name in self.classes.items()]
        return "\n".join(self.lines + lexemes) + "\n"


def _emit_terminal(em: _Emitter, name: str, dfa: DFA) -> list[str]:
    """Emit rules for a terminal; return the symbols that spell it inside a rule."""
    chain = dfa.chain()
    if chain is not None:
        return [em.chars(chars) for chars in chain]
    if not dfa.is_cyclic():
        return _emit_right_linear(em, name, dfa)
    # left-linear: state t derives every text that leads from the start to t
    n = len(dfa.edges)
    incoming: list[list[list[str]]] = [[] for _ in range(n)]
    for s in range(n):
        for t, chars in dfa.edges[s].items():
            incoming[t].append([f"{name}_{s}", em.chars(chars)])
    incoming[0].append([])
    for t in range(n):
        em.rule(f"{name}_{t}", incoming[t])
    em.rule(name, [[f"{name}_{f}"] for f in sorted(dfa.accepting)])
    return [name]


def _emit_right_linear(em: _Emitter, name: str, dfa: DFA) -> list[str]:
    """An acyclic automaton (a trie of literals, say) as right-linear rules.

    A state derives the texts that lead from it to acceptance. Runs of states with a single
    way on are written inline, so only branching states become rules: predicting the terminal
    costs one item per distinct next character, not one per literal.
    """
    needed = [0]
    seen = {0}
    while needed:
        s = needed.pop()
        alts: list[list[str]] = []
        for t, chars in dfa.edges[s].items():
            seq = [em.chars(chars)]
            while t not in dfa.accepting and len(dfa.edges[t]) == 1:
                ((t, chars),) = dfa.edges[t].items()
                seq.append(em.chars(chars))
            if dfa.edges[t]:
                seq.append(f"{name}_{t}")
                if t not in seen:
                    seen.add(t)
                    needed.append(t)
            alts.append(seq)
        if s in dfa.accepting:
            alts.append([])
        em.rule(f"{name}_{s}", alts)
    return [f"{name}_0"]


Symbol = tuple[bool, str]  # (is a terminal, name)


def compile_grammar(text: str, start: str = "start") -> CompiledGrammar:
    """Compile Lark grammar text into a character-level llguidance grammar."""
    terminals, rules, ignore = load_lark(text, start)
    term_by_name = {t.name: t for t in terminals}
    used_terms = {s.name for r in rules for s in r.expansion if s.is_term} | set(ignore)
    dfas: dict[str, DFA] = {}
    for name in sorted(used_terms):
        if name not in term_by_name:
            raise ConfigError(f"invalid grammar: terminal {name} is used but not defined")
        dfas[name] = _terminal_dfa(term_by_name[name])

    by_origin: dict[str, list[tuple[Symbol, ...]]] = {}
    for r in rules:
        exp = tuple((s.is_term, s.name) for s in r.expansion)
        if any(is_term and dfas[name].empty for is_term, name in exp):
            continue  # a terminal that matches nothing: the alternative derives nothing
        by_origin.setdefault(r.origin.name, []).append(exp)

    # Alternatives that are one terminal each become one terminal: a trie, not a long list.
    for origin, expansions in by_origin.items():
        single = [exp for exp in expansions if len(exp) == 1 and exp[0][0]]
        if len(single) < 2:
            continue
        names = sorted({exp[0][1] for exp in single})
        merged_name = f"__merged_{origin}"
        try:
            dfas[merged_name] = union_dfas([dfas[name] for name in names])
        except RegexUnsupported as err:
            raise ConfigError(f"invalid grammar: the literals of rule {origin} need {err}") from None
        rest = [exp for exp in expansions if not (len(exp) == 1 and exp[0][0])]
        by_origin[origin] = rest + [((True, merged_name),)]

    productive: set[str] = set()
    changed = True
    while changed:
        changed = False
        for origin, expansions in by_origin.items():
            if origin in productive:
                continue
            if any(all(is_term or name in productive for is_term, name in exp) for exp in expansions):
                productive.add(origin)
                changed = True
    ignore_terms = [name for name in ignore if not dfas[name].empty]
    if start not in productive:
        return CompiledGrammar('start: ""', "start", True, dfas, tuple(ignore_terms))

    def alive(exp) -> bool:
        return all(is_term or name in productive for is_term, name in exp)

    reachable = {start}
    stack = [start]
    live_terms: set[str] = set()
    while stack:
        origin = stack.pop()
        for exp in by_origin.get(origin, []):
            if not alive(exp):
                continue
            for is_term, name in exp:
                if is_term:
                    live_terms.add(name)
                elif name not in reachable:
                    reachable.add(name)
                    stack.append(name)

    em = _Emitter()
    rule_names: dict[str, str] = {}
    for i, origin in enumerate(sorted(reachable, key=lambda o: (o != start, o))):
        clean = re.sub(r"[^a-z0-9_]", "_", origin.lower()).strip("_")[:40]
        rule_names[origin] = f"r{i}_{clean}" if clean else f"r{i}"
    term_syms: dict[str, list[str]] = {}
    for i, name in enumerate(sorted(live_terms | set(ignore_terms))):
        term_syms[name] = _emit_terminal(em, f"t{i}", dfas[name])
    prefix: list[str] = []
    if ignore_terms:
        em.rule("ig_one", [term_syms[name] for name in ignore_terms])
        em.rule("ig", [[], ["ig", "ig_one"]])
        prefix = ["ig"]
    for origin in sorted(reachable, key=lambda o: rule_names[o]):
        alts = []
        for exp in by_origin.get(origin, []):
            if not alive(exp):
                continue
            alt: list[str] = []
            for is_term, name in exp:
                alt.extend(prefix + term_syms[name] if is_term else [rule_names[name]])
            alts.append(alt)
        em.rule(rule_names[origin], alts)
    em.rule("start", [[rule_names[start]] + prefix])
    return CompiledGrammar(em.text(), "start", False, dfas, tuple(ignore_terms))
