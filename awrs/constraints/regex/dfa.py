"""Regular expressions of grammar terminals as deterministic automata over characters.

A Lark terminal is a Python regular expression. :mod:`awrs.constraints.grammar.grammar` reads it as the
set of texts the expression matches *in full*, and spells that set out as grammar rules over
single characters, so that the grammar engine never has to choose where one terminal ends and
the next begins (see the module docstring of ``grammar.py`` for why). This module does the
regex half: Python ``re`` syntax -> NFA -> DFA whose edges are character sets.

Semantics, matching Python's ``re`` (the engine Lark uses):

* character classes, ``.``, ``\\d \\s \\w`` (Unicode or ASCII), negation, case-insensitive
  matching with ``re``'s own case folding (``"select"i`` also matches ``ſelect``, as in ``re``);
* concatenation, alternation, groups with scoped flags, greedy and lazy repetition;
* a one-character lookbehind inside a terminal (``(?<!\\\\)``, used by Lark's
  ``common.ESCAPED_STRING``), evaluated against the previous character of the terminal;
* a terminal with a lazy quantifier (``".*?"``, ``/\\*(.|\\n)*?\\*/``) matches only texts of
  which no proper prefix is also a match: the shortest-match reading that Lark's lexers give
  such terminals, which keeps ``"a"b"`` from being one string.

Not supported (a :class:`~awrs.errors.ConfigError` names the terminal): anchors and ``\\b``,
lookaheads, lookbehinds at the start of a terminal or wider than one character, backreferences,
conditionals, possessive quantifiers and atomic groups. Each depends on text outside the
terminal or is not regular.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

try:  # Python >= 3.11
    import re._constants as _c  # type: ignore[import-not-found]
    import re._parser as _p  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _c  # type: ignore[no-redef]
    import sre_parse as _p  # type: ignore[no-redef]

from .char_sets import Ranges, contains, fold_case, intersect, normalize, union
from .nfa import MAX_REPEAT_EXPANSION, NFA, REGEX_PACKAGE, RegexUnsupported, build_nfa

MAX_DFA_STATES = 20_000


# --- DFA ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DFA:
    """A deterministic automaton over characters; state 0 is the start.

    ``edges[s]`` maps a target state to the character set that leads there. Every state can
    reach an accepting state (dead states are removed); an empty language has no states.
    """

    edges: tuple[dict[int, Ranges], ...]
    accepting: frozenset[int]

    @property
    def empty(self) -> bool:
        return not self.edges

    def is_cyclic(self) -> bool:
        """Whether some state can reach itself (iterative depth-first search)."""
        color = [0] * len(self.edges)  # 0 new, 1 on the stack, 2 done
        for root in range(len(self.edges)):
            if color[root]:
                continue
            color[root] = 1
            stack = [(root, iter(self.edges[root]))]
            while stack:
                state, children = stack[-1]
                for t in children:
                    if color[t] == 1:
                        return True
                    if color[t] == 0:
                        color[t] = 1
                        stack.append((t, iter(self.edges[t])))
                        break
                else:
                    color[state] = 2
                    stack.pop()
        return False

    def chain(self) -> list[Ranges] | None:
        """The character sets of a DFA that is one straight path (a literal, say), else None."""
        out = []
        s = 0
        seen = set()
        while True:
            seen.add(s)
            if s in self.accepting:
                return out if not self.edges[s] else None
            if len(self.edges[s]) != 1:
                return None
            ((t, chars),) = self.edges[s].items()
            if t in seen:
                return None
            out.append(chars)
            s = t

    def matches(self, text: str) -> bool:
        """Whether the automaton accepts ``text`` in full (used by tests)."""
        if self.empty:
            return False
        s = 0
        for ch in text:
            for t, chars in self.edges[s].items():
                if contains(chars, ord(ch)):
                    s = t
                    break
            else:
                return False
        return s in self.accepting


def _partition(sets: list[Ranges]) -> tuple[list[Ranges], list[frozenset[int]]]:
    """Split the characters used by ``sets`` into atoms; return atoms and each set's atom ids."""
    bounds = sorted({b for s in sets for lo, hi in s for b in (lo, hi + 1)})
    if not bounds:
        return [], [frozenset() for _ in sets]
    n = len(bounds) - 1
    member: list[list[int]] = [[] for _ in range(n)]
    for sid, s in enumerate(sets):
        for lo, hi in s:
            i = bisect.bisect_left(bounds, lo)
            j = bisect.bisect_left(bounds, hi + 1)
            for k in range(i, j):
                member[k].append(sid)
    by_signature: dict[tuple[int, ...], list[tuple[int, int]]] = {}
    for k in range(n):
        if member[k]:
            by_signature.setdefault(tuple(member[k]), []).append((bounds[k], bounds[k + 1] - 1))
    atoms = []
    atom_sets: list[set[int]] = [set() for _ in sets]
    for signature, ranges in by_signature.items():
        aid = len(atoms)
        atoms.append(normalize(ranges))
        for sid in signature:
            atom_sets[sid].add(aid)
    return atoms, [frozenset(a) for a in atom_sets]


def compile_regex(
    pattern: str, *, full_match: bool = False, regex_package: bool = False,
    max_states: int = MAX_DFA_STATES, max_repeat: int = MAX_REPEAT_EXPANSION,
) -> DFA:
    """The DFA of the texts that ``pattern`` (Python ``re`` syntax) matches in full.

    By default as a Lark terminal (lazy quantifiers read as shortest matches, see the module
    docstring). With ``full_match`` as ``re.fullmatch`` reads it: lazy quantifiers match like
    greedy ones, and a leading ``^`` / ``\\A`` and a trailing ``$`` / ``\\Z`` are dropped,
    since under a full match they hold anyway.

    With ``regex_package``, ``\\d``, ``\\s`` and ``\\w`` are the `regex` package's classes, and
    case-insensitive patterns are unsupported (its case folding differs from ``re``'s).

    Raises RegexUnsupported for features a terminal cannot express and re.error for syntax
    errors.
    """
    parsed = _p.parse(pattern, 0)
    flags = parsed.state.flags | (REGEX_PACKAGE if regex_package else 0)
    if full_match:
        _drop_outer_anchors(parsed)
    nfa = NFA()
    nfa.max_repeat = max_repeat
    start = nfa.state()
    final = build_nfa(nfa, parsed, flags, start)
    return _determinize(nfa, start, {final}, stop_at_final=nfa.lazy and not full_match, max_states=max_states)


_STARTS = (_c.AT_BEGINNING, _c.AT_BEGINNING_STRING)
_ENDS = (_c.AT_END, _c.AT_END_STRING)


def _drop_outer_anchors(pattern) -> None:
    """Remove anchors at the very start and end of ``pattern`` (and of its top-level branches)."""
    items = pattern.data
    if len(items) == 1 and items[0][0] is _c.BRANCH:
        for alt in items[0][1][1]:
            _drop_outer_anchors(alt)
        return
    if items and items[0][0] is _c.AT and items[0][1] in _STARTS:
        del items[0]
    if items and items[-1][0] is _c.AT and items[-1][1] in _ENDS:
        del items[-1]


def literal_dfa(text: str, ignore_case: bool) -> DFA:
    """The DFA of one literal string (Lark's ``"..."`` and ``"..."i``)."""
    sets = [fold_case(((ord(c), ord(c)),)) if ignore_case else ((ord(c), ord(c)),) for c in text]
    return chain_dfa(sets)


def chain_dfa(sets: list[Ranges]) -> DFA:
    if any(not s for s in sets):
        return DFA((), frozenset())
    edges = tuple({i + 1: s} for i, s in enumerate(sets)) + ({},)
    return DFA(edges, frozenset([len(sets)]))


def _trie(chains: list[list[Ranges]]) -> DFA | None:
    """A trie of chains whose sets at each branch are equal or disjoint; None otherwise."""
    edges: list[dict[Ranges, int]] = [{}]
    accepting = set()
    for chain in chains:
        node = 0
        for chars in chain:
            out = edges[node]
            child = out.get(chars)
            if child is None:
                if any(intersect(chars, other) for other in out):
                    return None
                child = out[chars] = len(edges)
                edges.append({})
            node = child
        accepting.add(node)
    return DFA(tuple({t: chars for chars, t in out.items()} for out in edges), frozenset(accepting))


def union_dfas(dfas: list[DFA], max_states: int = 10 * MAX_DFA_STATES) -> DFA:
    """One DFA for the union of the languages of ``dfas`` (a trie for a list of literals)."""
    dfas = [d for d in dfas if not d.empty]
    if not dfas:
        return DFA((), frozenset())
    chains = [d.chain() for d in dfas]
    if all(c is not None for c in chains):
        trie = _trie(chains)  # type: ignore[arg-type]
        if trie is not None:
            return trie
    nfa = NFA()
    start = nfa.state()
    finals: set[int] = set()
    for dfa in dfas:
        if dfa.empty:
            continue
        base = len(nfa.eps)
        for _ in dfa.edges:
            nfa.state()
        nfa.eps[start].append(base)
        for s, out in enumerate(dfa.edges):
            for t, chars in out.items():
                nfa.edges[base + s].append((nfa.set_id(chars), base + t))
        finals.update(base + f for f in dfa.accepting)
    return _determinize(nfa, start, finals, stop_at_final=False, max_states=max_states)


def _determinize(
    nfa: NFA, start: int, finals: set[int], *, stop_at_final: bool, max_states: int = MAX_DFA_STATES
) -> DFA:
    """Subset construction; with ``stop_at_final`` accepting states get no outgoing edges."""
    atoms, set_atoms = _partition(nfa.sets)
    behind_sets = sorted({sid for edges in nfa.behind for sid, _, _ in edges})
    has_behind = bool(behind_sets)

    def closure(states, last_atom):
        stack = list(states)
        seen = set(stack)
        while stack:
            s = stack.pop()
            targets = list(nfa.eps[s])
            for sid, negated, t in nfa.behind[s]:
                if last_atom is None:
                    raise RegexUnsupported("a lookbehind at the start of a terminal")
                if (last_atom in set_atoms[sid]) != negated:
                    targets.append(t)
            for t in targets:
                if t not in seen:
                    seen.add(t)
                    stack.append(t)
        return frozenset(seen)

    def behind_key(atom):
        if not has_behind:
            return None
        return frozenset(sid for sid in behind_sets if atom in set_atoms[sid])

    init = (closure([start], None), None)
    index = {init: 0}
    keys = [init]
    raw_edges: list[dict[int, list[int]]] = []
    i = 0
    while i < len(keys):
        states, _ = keys[i]
        moves: dict[int, set[int]] = {}
        if not (stop_at_final and not finals.isdisjoint(states)):
            for s in states:
                for sid, t in nfa.edges[s]:
                    for a in set_atoms[sid]:
                        moves.setdefault(a, set()).add(t)
        out: dict[int, list[int]] = {}
        for a, targets in moves.items():
            key = (closure(targets, a if has_behind else None), behind_key(a))
            if key not in index:
                if len(keys) >= max_states:
                    raise RegexUnsupported(f"more than {max_states} automaton states")
                index[key] = len(keys)
                keys.append(key)
            out.setdefault(index[key], []).append(a)
        raw_edges.append(out)
        i += 1
    accepting = {k for k, (states, _) in enumerate(keys) if not finals.isdisjoint(states)}
    return _prune(raw_edges, accepting, atoms)


def _prune(raw_edges, accepting, atoms) -> DFA:
    """Drop states that cannot reach acceptance, renumber from the start, merge edge sets."""
    n = len(raw_edges)
    reverse: list[list[int]] = [[] for _ in range(n)]
    for s, out in enumerate(raw_edges):
        for t in out:
            reverse[t].append(s)
    alive = set(accepting)
    stack = list(accepting)
    while stack:
        t = stack.pop()
        for s in reverse[t]:
            if s not in alive:
                alive.add(s)
                stack.append(s)
    if 0 not in alive:
        return DFA((), frozenset())
    order = [0]
    number = {0: 0}
    i = 0
    while i < len(order):
        for t in raw_edges[order[i]]:
            if t in alive and t not in number:
                number[t] = len(order)
                order.append(t)
        i += 1
    edges = []
    for s in order:
        edges.append(
            {
                number[t]: union(*(atoms[a] for a in atom_ids))
                for t, atom_ids in raw_edges[s].items()
                if t in alive
            }
        )
    return DFA(tuple(edges), frozenset(number[s] for s in accepting if s in number))
