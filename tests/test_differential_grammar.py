"""Lark grammars against Lark itself, on inputs nobody chose (hypothesis).

For the grammars of ``shared/data`` (the blocksworld goal grammar, the SMILES grammar, two of
the per-database Spider SQL grammars; another two each round of ``make fuzz``) and a few small
hand-written ones (arithmetic with nesting, calls through a template and keywords that are
also names, JSON with ``common``'s lazy string terminal, Unicode terminals with ``"kw"i``
literals and ``/.../i`` regexes whose case folds go beyond ASCII, multi-byte ``%ignore``):

* a random derivation of the grammar -- a hypothesis strategy walks Lark's own reading of the
  rules (templates, ``?rule``, ``[x]``, ``"kw"i`` expanded by Lark's loader), expands
  nonterminals down to a depth limit, draws each regex terminal with ``from_regex`` and each
  ``"kw"i`` literal in random case, and puts ``%ignore``d text before terminals and at the end
  -- fed in random pieces (cut anywhere, inside multi-byte characters too) stays alive after
  every piece and is complete at the end, whenever the oracle parses it (it need not:
  ``from_regex`` does not read lazy quantifiers, and ``"a"b"`` is no ``ESCAPED_STRING``);
* mutations of derivations (a character inserted, deleted, replaced, two swapped, a piece
  duplicated; Spider gold queries are mutated too) are complete exactly when the oracle
  parses them, and a text the oracle parses is never declared dead on the way.

The oracle is Lark's Earley parser with ``lexer="dynamic_complete"``, the language awrs's
``Grammar`` documents, on the same grammar text. Its parser and lexer share no code with
awrs's engine (awrs rewrites the grammar into one over characters and runs llguidance's
Earley recognizer on it); what they share is Lark's grammar *loader*, which awrs uses to read
the grammar (imports, templates, ``?rule``), so a loader mistake is not seen here.

Where Lark's implementation and the documented language differ, these are oracle limits:

* an empty literal ``""``/``""i`` (the Spider grammars have it as an alternative of its own):
  awrs reads it as the empty sequence, Lark refuses the grammar; the oracle's copy of the
  grammar has those alternatives written as empty ones (same language);
* a regex terminal whose alternation prefers a shorter branch (``/a|ab/``): Lark's complete
  lexer tries only the regex engine's preferred match and that match cut shorter, so it never
  reads ``ab`` as one such terminal. A disagreement where awrs completes, the oracle rejects
  and the text has such a hidden match is not counted (``Oracle.hides_a_match``; none of the
  grammars here has such a terminal, so it never fires on them);
* Lark matches an ``%ignore`` terminal greedily only, so where a terminal may begin with
  ignored text (``%ignore /[ ]+/`` next to ``X: " x"``) it rejects ``a  x``, which awrs
  accepts: no grammar here has such a terminal.

Both limits are shown on their minimal grammars by the last two tests.

Fixed, derandomized budget in ``make test``; ``AWRS_FUZZ_SEED``/``AWRS_FUZZ_EXAMPLES`` for
longer runs (``make fuzz``), and ``AWRS_FUZZ_GRAMMARS`` Spider grammars (2) per run.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import feed_in_pieces
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

lark = pytest.importorskip("lark")
pytest.importorskip("llguidance")

from awrs.constraints import Grammar  # noqa: E402
from awrs.constraints.base import DEAD  # noqa: E402
from test_grammar import JSON_GRAMMAR as JSON_LIKE  # noqa: E402 -- the same JSON grammar as there

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SPIDER = SHARED / "spider"
FUZZ_EXAMPLES = int(os.environ.get("AWRS_FUZZ_EXAMPLES", "12"))
FUZZ_SEED = os.environ.get("AWRS_FUZZ_SEED")
ROUND = int(FUZZ_SEED or 0)
SPIDER_COUNT = int(os.environ.get("AWRS_FUZZ_GRAMMARS", "2"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=FUZZ_SEED is None, database=None,
                suppress_health_check=list(HealthCheck))
SLACK = 30  # derivation depth beyond the start rule's shortest one (SQL nests deep)
EXPANSIONS = 80  # random choices of structure per derivation; after that, shortest completions only

ARITHMETIC = r"""
?start: sum
?sum: product | sum ADDOP product
?product: power | product MULOP power
?power: unary | unary "**" power
?unary: atom | "-" unary
?atom: NUMBER | NAME | NAME "(" [_commas{sum}] ")" | "(" sum ")" | IF sum "then"i sum "else"i sum
_commas{x}: x ("," x)*
IF.2: "if"i
ADDOP: "+" | "-"
MULOP: "*" | "/" | "//" | "%"
NUMBER: /\d+(\.\d+)?([eE][+-]?\d+)?/
NAME: /[^\W\d]\w*/
%ignore /[ \t]+/
"""


UNICODE = r"""
start: item (";" item)*
item: GREEK | HAN+ | "straße"i | "kelvin"i | "σοφία"i | EMOJI "!"? | "é" ACCENTED | "日本" "語"? | TAG
TAG: /#[a-z]+/i
GREEK: /[α-ωΑ-Ω]+/
HAN: /[\u4e00-\u9fff]/
EMOJI: /[\U0001F600-\U0001F64F]/
ACCENTED: /[à-ÿ]{1,3}/
%ignore /[ \u3000]+/
"""

HAND_WRITTEN = {"arithmetic": ARITHMETIC, "json": JSON_LIKE, "unicode": UNICODE}


def spider_databases() -> list[str]:
    """Two small ones in ``make test``; a seeded draw of all of them in ``make fuzz``."""
    if not (SPIDER / "grammars").is_dir():
        return []
    every = sorted(p.stem for p in (SPIDER / "grammars").glob("*.lark"))
    if FUZZ_SEED is None:
        return [db for db in ("concert_singer", "pets_1") if db in every][:SPIDER_COUNT]
    return sorted(random.Random(ROUND).sample(every, min(SPIDER_COUNT, len(every))))


def grammar_cases() -> list:
    cases = [pytest.param(name, text, id=name) for name, text in HAND_WRITTEN.items()]
    for name, path in (("goal_inference", SHARED / "goal_inference" / "goal_inference.lark"),
                       ("smiles", SHARED / "molecules" / "smiles.lark")):
        if path.is_file():
            cases.append(pytest.param(name, path.read_text(), id=name))
        else:
            cases.append(pytest.param(name, "", id=name, marks=pytest.mark.skip(reason=f"no {path}")))
    databases = spider_databases()
    for db in databases:
        text = (SPIDER / "grammars" / f"{db}.lark").read_text()
        cases.append(pytest.param(f"spider/{db}", text, id=f"spider-{db}"))
    if not databases:
        absent = pytest.mark.skip(reason="shared Spider data absent")
        cases.append(pytest.param("spider", "", id="spider", marks=absent))
    return cases


CASES = grammar_cases()
EMPTY_ALTERNATIVE = re.compile(r'(^|[:|])([ \t]*)""i?(?=[ \t]*(?:\||$))', re.MULTILINE)


def lark_text(text: str) -> str:
    """The grammar as Lark takes it: an alternative that is an empty literal written as empty."""
    return EMPTY_ALTERNATIVE.sub(r"\1\2", text)


class Oracle:
    """Lark's Earley parser with a complete dynamic lexer on the grammar text."""

    def __init__(self, text: str) -> None:
        self.parser = lark.Lark(lark_text(text), parser="earley", lexer="dynamic_complete")
        self.regexes = {t.name: re.compile(t.pattern.to_regexp()) for t in self.parser.terminals
                        if t.pattern.type == "re"}

    def __call__(self, text: str) -> bool:
        try:
            self.parser.parse(text)
        except lark.exceptions.LarkError:
            return False
        return True

    def hides_a_match(self, text: str) -> bool:
        """Whether a regex terminal fully matches some piece of ``text`` that Lark's complete
        lexer cannot produce (the preferred match at that position and its cut-short matches
        all end elsewhere): the oracle limit on regexes whose alternation prefers a shorter
        branch."""
        for regex in self.regexes.values():
            for i in range(len(text)):
                m = regex.match(text, i)
                if m is None:
                    continue  # no match at all here, so no full one either (no lookaheads in awrs)
                found = {m.end()}
                whole = m.group(0)
                for j in range(1, len(whole)):
                    cut = regex.match(whole[:-j])
                    if cut:
                        found.add(i + cut.end())
                for end in range(i + 1, len(text) + 1):
                    if end not in found and regex.fullmatch(text, i, end):
                        return True
        return False


class Deriver:
    """Lark's reading of a grammar as rules to walk: alternatives by rule, terminals, ignores,
    and each rule's shortest derivation height (so that a depth limit always leaves a way out)."""

    def __init__(self, parser) -> None:
        self.rules: dict[str, list[tuple[tuple[bool, str], ...]]] = defaultdict(list)
        for rule in parser.rules:
            self.rules[rule.origin.name].append(tuple((s.is_term, s.name) for s in rule.expansion))
        self.start = parser.options.start[0]
        self.terminals = {t.name: t for t in parser.terminals}
        self.ignore = list(parser.ignore_tokens)
        self.height = self._heights()
        # rules whose every alternative is one terminal (character-level grammars spell each
        # keyword letter as one): choosing among them does not use up the derivation's budget
        self.lexical = {name for name, alts in self.rules.items()
                        if all(len(alt) == 1 and alt[0][0] for alt in alts)}
        self._strategies: dict[str, st.SearchStrategy] = {}

    def _alt_height(self, alt, height) -> float:
        return 1 + max([0, *(0 if is_term else height[name] for is_term, name in alt)])

    def _heights(self) -> dict[str, float]:
        height = {name: float("inf") for name in self.rules}
        changed = True
        while changed:
            changed = False
            for name, alts in self.rules.items():
                best = min(self._alt_height(alt, height) for alt in alts)
                if best < height[name]:
                    height[name], changed = best, True
        return height

    def terminal(self, name: str) -> st.SearchStrategy[str]:
        strategy = self._strategies.get(name)
        if strategy is None:
            pattern = self.terminals[name].pattern
            if pattern.type == "str" and not pattern.flags:
                strategy = st.just(pattern.value)
            else:  # a regex, or a "kw"i literal: every case its regex matches
                strategy = st.from_regex(re.compile(pattern.to_regexp()), fullmatch=True,
                                         alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)))
            self._strategies[name] = strategy
        return strategy

    def derivations(self) -> st.SearchStrategy[str]:
        @st.composite
        def derive(draw):
            out: list[str] = []
            budget = [EXPANSIONS]

            def ignored():
                if self.ignore and draw(st.integers(0, 3)) == 0:
                    out.append(draw(self.terminal(draw(st.sampled_from(self.ignore)))))

            def walk(name: str, depth: float) -> None:
                alts = [alt for alt in self.rules[name] if self._alt_height(alt, self.height) <= depth]
                if name in self.lexical:  # a choice of characters ("S"i | "s"i): no structure
                    alt = draw(st.sampled_from(alts))
                elif budget[0] > 0:
                    budget[0] -= 1
                    # an empty alternative (an optional clause, a loop's end) half the time,
                    # however many others there are: loops then end after two rounds on average
                    # and the budget lasts to a statement's later clauses (FROM, WHERE)
                    full = [alt for alt in alts if alt]
                    if len(full) < len(alts) and (not full or draw(st.booleans())):
                        alt = ()
                    else:
                        alt = draw(st.sampled_from(full))
                else:  # out of choices: the shortest way out
                    alt = min(alts, key=lambda a: self._alt_height(a, self.height))
                for is_term, symbol in alt:
                    if is_term:
                        ignored()
                        out.append(draw(self.terminal(symbol)))
                    else:
                        walk(symbol, depth - 1)

            walk(self.start, self.height[self.start] + SLACK)
            ignored()
            return "".join(out)

        return derive()


_compiled: dict[str, tuple[Grammar, Oracle, Deriver]] = {}


def compiled(name: str, text: str) -> tuple[Grammar, Oracle, Deriver]:
    """awrs's constraint, the oracle and the derivations for a grammar (built once a session:
    the Spider grammars take seconds to load)."""
    if name not in _compiled:
        oracle = Oracle(text)
        _compiled[name] = (Grammar(text), oracle, Deriver(oracle.parser))
    return _compiled[name]


def gold_queries(name: str) -> list[str]:
    if not name.startswith("spider/"):
        return []
    dev = json.loads((SPIDER / "dev.json").read_text())
    return sorted({ex["query"] for ex in dev if ex["db_id"] == name.split("/", 1)[1]})[:40]


# characters a mutation inserts: grammar punctuation, Unicode case folds that Python's re
# matches under IGNORECASE (KELVIN SIGN for k, LONG S for s, final sigma), non-ASCII digits and
# letters that \d and \w match, multi-byte characters to cut inside
MUTATION_CHARS = list("()[]{},;:.+-*/%\"\\ \t\n0123456789aAbBeEzZ_!") + [
    "\u212a", "\u017f", "ς", "Σ", "ß", "é", "É", "٣", "²", "日", "語", "\u3000", "😀", "α", "Ω"]


def mutate(text: str, data) -> str:
    for _ in range(data.draw(st.integers(1, 2), label="mutations")):
        kind = data.draw(st.sampled_from(["insert", "delete", "replace", "swap", "duplicate"]), label="kind")
        at = data.draw(st.integers(0, len(text)), label="at")
        chars = st.sampled_from(MUTATION_CHARS + sorted(set(text)))  # the text's own characters too
        if kind == "insert" or not text:
            text = text[:at] + data.draw(chars, label="char") + text[at:]
            continue
        at = min(at, len(text) - 1)
        if kind == "delete":
            text = text[:at] + text[at + 1:]
        elif kind == "replace":
            text = text[:at] + data.draw(chars, label="char") + text[at + 1:]
        elif kind == "swap":
            text = text[:at] + text[at + 1:at + 2] + text[at] + text[at + 2:]
        else:
            end = data.draw(st.integers(at + 1, min(len(text), at + 8)), label="end")
            text = text[:end] + text[at:end] + text[end:]
    return text


def completes(constraint: Grammar, text: str, cuts) -> tuple[bool, list]:
    states = feed_in_pieces(constraint, text.encode(), cuts)
    if not states:  # the empty text
        return constraint.is_complete(constraint.start()), states
    return states[-1] is not DEAD and constraint.is_complete(states[-1]), states


@pytest.mark.parametrize("name, text", CASES)
def test_derivations_stay_alive_in_any_pieces_and_complete(name, text):
    constraint, oracle, deriver = compiled(name, text)

    @FUZZ
    @seed(ROUND)
    @given(data=st.data())
    def check(data):
        derived = data.draw(deriver.derivations(), label="derivation")
        cuts = data.draw(st.lists(st.integers(0, len(derived.encode())), max_size=6), label="cuts")
        complete, states = completes(constraint, derived, cuts)
        if oracle(derived):
            assert all(s is not DEAD for s in states), (derived, cuts)
            assert complete, derived
        else:  # from_regex's reading of a lazy terminal, say: a question of agreement only
            assert not complete or oracle.hides_a_match(derived), derived

    check()


@pytest.mark.parametrize("name, text", CASES)
def test_mutations_complete_exactly_when_lark_parses_them(name, text):
    constraint, oracle, deriver = compiled(name, text)
    gold = gold_queries(name)
    bases = deriver.derivations() if not gold else st.one_of(deriver.derivations(), st.sampled_from(gold))

    @FUZZ
    @seed(ROUND + 1_000_000)
    @given(data=st.data())
    def check(data):
        mutated = mutate(data.draw(bases, label="base"), data)
        expected = oracle(mutated)
        cuts = data.draw(st.lists(st.integers(0, len(mutated.encode())), max_size=4), label="cuts")
        complete, states = completes(constraint, mutated, cuts)
        if expected:
            assert all(s is not DEAD for s in states), (mutated, cuts)
        if complete and not expected and oracle.hides_a_match(mutated):
            return  # Lark's lexer never tries the match awrs reads (an oracle limit, see above)
        assert complete == expected, (mutated, cuts)

    check()


def test_the_oracle_limit_on_alternations_is_recognised():
    # Lark's complete lexer never reads "ab" as /a|ab/ (its preferred match is "a"); awrs does.
    text = "start: T\nT: /a|ab/\n"
    oracle = Oracle(text)
    assert Grammar(text).accepts("ab") and not oracle("ab")
    assert oracle.hides_a_match("ab")
    assert not Oracle("start: T\nT: /ab|a/\n").hides_a_match("ab")


def test_the_oracle_limit_on_ignored_text_is_real():
    # Lark's dynamic lexer skips the whole run of spaces, so X can no longer start inside it.
    text = 'start: "a" X\nX: " x"\n%ignore /[ ]+/\n'
    assert Grammar(text).accepts("a  x") and not Oracle(text)("a  x")
    assert Grammar(text).accepts("a x") and Oracle(text)("a x")
