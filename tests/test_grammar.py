"""Grammar: Lark grammars as exact prefix checks (llguidance on a character-level rewrite).

* semantics: terminals that are prefixes of longer ones, %ignore (also at the start and end),
  "kw"i, %import common, templates, priorities, lazy terminals, "" literals, UTF-8 split
  across tokens, exact next_bytes;
* the language equals Lark's Earley parser with lexer="dynamic_complete" on random grammars
  (hypothesis), and the prefix contract holds (a rejected prefix has no accepted extension;
  every prefix of an accepted text is accepted; no exception on arbitrary bytes);
* terminal regexes compile to automata that agree with Python's re;
* real grammars: Spider (gold queries with all byte prefixes, corruptions), blocksworld
  goals, SMILES; an end-to-end generation with a tiny exact model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

lark = pytest.importorskip("lark")
pytest.importorskip("llguidance")

import awrs
from awrs.constraints.base import DEAD
from awrs.constraints.grammar.grammar import Grammar
from awrs.constraints.regex.dfa import compile_regex
from awrs.errors import ConfigError
from awrs.testing import bytes_accepted

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "grammar"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

JSON_GRAMMAR = r"""
?start: value
?value: object | array | string | SIGNED_NUMBER -> number | "true" | "false" | "null"
array  : "[" [value ("," value)*] "]"
object : "{" [pair ("," pair)*] "}"
pair   : string ":" value
string : ESCAPED_STRING
%import common.ESCAPED_STRING
%import common.SIGNED_NUMBER
%import common.WS
%ignore WS
"""

HYPOTHESIS = settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)




@pytest.fixture(scope="module")
def json_grammar() -> Grammar:
    return Grammar(JSON_GRAMMAR)


# --- semantics ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, whole",
    [
        ('{"a": [1, 2.5e3, "x\\"y", true, null]}', True),
        ("  [ ]  ", True),  # %ignore at the start and at the end
        ('"é日本"', True),
        ('["a"b"]', False),  # a string ends at its first unescaped quote
        ('["a\\"]', None),  # still inside the string: a prefix, not a text
        ('{"a" 1}', False),
        ("tru", None),
        ("[1,]", False),
        ("", None),
    ],
)
def test_json_grammar(json_grammar, text, whole):
    if whole is None:
        assert json_grammar.accepts_prefix(text) and not json_grammar.accepts(text)
    elif whole:
        assert json_grammar.accepts(text)
        assert bytes_accepted(json_grammar, text) == len(text.encode())
    else:
        assert not json_grammar.accepts(text)


def test_terminal_that_is_a_prefix_of_a_longer_terminal():
    # A lexer that reads "co" greedily as the start of "concert" rejects "cox"; we do not.
    g = Grammar('start: "co" "x" | "concert" | A B\nA: /a+/\nB: /ab/')
    for text in ["cox", "concert", "aab", "ab" * 0 + "aaab"]:
        assert g.accepts(text), text
        assert bytes_accepted(g, text) == len(text)
    assert not g.accepts("cone")
    assert not g.accepts_prefix("coz")
    assert not g.accepts("ab")  # A needs at least one a before B's "ab"


def test_case_insensitive_literals_priorities_templates():
    g = Grammar(
        """
        start: _sep{item, ","}
        _sep{x, sep}: x (sep x)*
        item: KW | NAME
        KW.2: "select"i
        NAME.1: /[a-z]+/
        %ignore " "
        """
    )
    assert g.accepts("SeLeCt, abc ,select")
    assert g.accepts_prefix("SEL")
    assert not g.accepts("abc,,x")


def test_empty_string_literals_read_as_nothing():
    # the Spider grammars use ""i, which Lark itself refuses
    g = Grammar('start: x "b"\nx: ""i | "a"')
    assert g.accepts("b") and g.accepts("ab") and not g.accepts("a")


def test_lazy_terminal_is_shortest_match():
    g = Grammar(
        r"start: (C_COMMENT | WORD)+" + '\n%import common.C_COMMENT\n%import common.WORD\n%ignore " "'
    )
    assert g.accepts("/* a */ b")
    assert not g.accepts("/* a */ b */")  # the comment ends at its first */
    assert g.accepts_prefix("/* a * / b")


def test_utf8_split_across_tokens():
    g = Grammar('start: "é" "日"+')
    data = "é日日".encode()
    state = g.start()
    for i in range(len(data)):
        state = g.advance(state, data[i : i + 1])
        assert state is not DEAD
    assert g.is_complete(state)
    half = g.advance(g.start(), data[:1])
    assert half is not DEAD and not g.is_complete(half)
    assert g.advance(half, b"\x41") is DEAD  # not a continuation byte
    assert g.advance(g.start(), b"\xff") is DEAD


def test_next_bytes_is_exact(json_grammar):
    for prefix in ["", "[", '{"a', '{"a":', "[1", "[1.5e", "tr"]:
        state = json_grammar.advance(json_grammar.start(), prefix.encode())
        allowed = json_grammar.next_bytes(state)
        direct = {b for b in range(256) if json_grammar.advance(state, bytes([b])) is not DEAD}
        assert allowed == frozenset(direct), prefix


def test_next_bytes_empty_when_finished():
    g = Grammar('start: "ab"')
    state = g.advance(g.start(), b"ab")
    assert g.is_complete(state)
    assert g.next_bytes(state) == frozenset()
    assert g.advance(state, b"a") is DEAD


def test_states_are_shared_not_mutated(json_grammar):
    base = json_grammar.advance(json_grammar.start(), b"[1")
    a = json_grammar.advance(base, b",2]")
    b = json_grammar.advance(base, b"x")
    c = json_grammar.advance(base, b"]")
    assert a is not DEAD and b is DEAD and c is not DEAD
    assert json_grammar.is_complete(a) and json_grammar.is_complete(c)
    assert not json_grammar.is_complete(base)
    assert json_grammar.advance(base, b"") is base


def test_empty_language():
    g = Grammar("start: a\na: a")
    assert not g.accepts("") and g.advance(g.start(), b"x") is DEAD
    assert g.next_bytes(g.start()) == frozenset()


@pytest.mark.parametrize(
    "text, needle",
    [
        ("start: (", "invalid grammar"),
        ("start: foo", "invalid grammar"),
        ('start: "a"\n%import nonexistent.X', "invalid grammar"),
        ("start: A\nA: /a(?=b)/", "lookahead"),
        ("start: A\nA: /\\ba/", "anchor"),
        ("start: A\nA: /(a)\\1/", "backreference"),
        ("start: A\nA: /a[/", "invalid regex"),
        ("start: A\n%declare A", "not defined"),
    ],
)
def test_invalid_grammars_raise_one_line_config_errors(text, needle):
    with pytest.raises(ConfigError) as info:
        Grammar(text)
    message = str(info.value)
    assert needle in message and "\n" not in message
    if "A:" in text:
        assert "terminal A" in message


def test_unknown_start_rule():
    with pytest.raises(ConfigError, match="no rule named 'begin'"):
        Grammar('start: "a"', start="begin")


def test_not_a_string():
    with pytest.raises(ConfigError):
        Grammar(42)  # type: ignore[arg-type]


# --- the language is Lark's (dynamic_complete Earley) on random grammars -------------------

TERMS = ['"a"', '"ab"', '"b"i', "/a+/", "/[ab]b?/", '"ba"', "/b*a/", '"aa"']


@st.composite
def random_grammars(draw):
    n = draw(st.integers(1, 3))
    symbols = TERMS + [f"r{j}" for j in range(n)]
    lines = []
    for i in range(n):
        alternatives = draw(st.lists(st.lists(st.sampled_from(symbols), max_size=3), min_size=1, max_size=3))
        lines.append(f"r{i}: " + " | ".join(" ".join(alt) for alt in alternatives))
    text = "start: r0\n" + "\n".join(lines) + "\n"
    if draw(st.booleans()):
        text += '%ignore " "\n'
    return text


def lark_oracle(text: str):
    try:
        parser = lark.Lark(text, parser="earley", lexer="dynamic_complete")
    except lark.exceptions.LarkError:
        return None

    def accepts(s: str) -> bool:
        try:
            parser.parse(s)
            return True
        except lark.exceptions.LarkError:
            return False

    return accepts


@HYPOTHESIS
@given(random_grammars(), st.lists(st.text(alphabet="abA ", max_size=6), min_size=1, max_size=25))
def test_language_equals_lark_dynamic_complete(text, strings):
    oracle = lark_oracle(text)
    if oracle is None:
        return
    g = Grammar(text)
    for s in strings:
        expected = oracle(s)
        assert g.accepts(s) == expected, (text, s)
        if expected:
            assert bytes_accepted(g, s) == len(s)


@HYPOTHESIS
@given(random_grammars(), st.text(alphabet="abA ", max_size=5), st.text(alphabet="abA ", max_size=5))
def test_rejected_prefix_has_no_accepted_extension(text, prefix, suffix):
    if lark_oracle(text) is None:
        return
    g = Grammar(text)
    if not g.accepts_prefix(prefix):
        assert not g.accepts(prefix + suffix)
        assert not g.accepts_prefix(prefix + suffix)


@HYPOTHESIS
@given(st.binary(max_size=40))
def test_arbitrary_bytes_never_raise(json_grammar_module, data):
    state = json_grammar_module.start()
    for i in range(0, len(data), 3):
        state = json_grammar_module.advance(state, data[i : i + 3])
        if state is DEAD:
            return
    json_grammar_module.is_complete(state)
    json_grammar_module.next_bytes(state)


@pytest.fixture(scope="module")
def json_grammar_module() -> Grammar:
    return Grammar(JSON_GRAMMAR)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@HYPOTHESIS
@given(json_values, st.sampled_from([None, 1, 2]))
def test_valid_json_is_accepted_with_every_byte_prefix(json_grammar_module, value, indent):
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    assert json_grammar_module.accepts(text)
    assert bytes_accepted(json_grammar_module, text) == len(text.encode())


# --- terminal regexes agree with Python's re ---------------------------------------------

PATTERNS = [
    r"[a-c]+x?",
    r"(?i)sel[e-f]ct",
    r"\d+(\.\d*)?([eE][+-]?\d+)?",
    r"[^\s\d]{1,3}",
    r"\w\W",
    r"(ab|a)(ba|b)*",
    r"(?s:.)(?-i:a)",
    r"[^a]",
    r"(?i)[^k]",
    r"(?ai)[s-t]K",
    r"é+|日",
    r"a{2,4}b{0,1}",
]


@HYPOTHESIS
@given(st.sampled_from(PATTERNS), st.text(alphabet="abcxABCKk.e+-1 9\n_éÉ日\u212a", max_size=6))
def test_terminal_automata_agree_with_re(pattern, s):
    dfa = compile_regex(pattern)
    assert dfa.matches(s) == (re.fullmatch(pattern, s) is not None), (pattern, s)


# --- real grammars -------------------------------------------------------------------------


def test_goal_inference_grammar():
    g = Grammar((FIXTURES / "goal_inference.lark").read_text())
    for text in [" (on b1 b2", " (on b1 b2) (clear b3) (arm-empty", " (holding b7"]:
        assert g.accepts(text)
        assert bytes_accepted(g, text) == len(text)
    for text in [" (on b1 b2)", "(on b1 b2", " (onx", " (on b12"]:
        assert not g.accepts(text)
    assert not g.accepts_prefix(" (onx")


def test_smiles_grammar_accepts_gdb17_with_prefixes():
    g = Grammar((FIXTURES / "smiles.lark").read_text())
    molecules = (FIXTURES / "GDB17_sample.txt").read_text().split()
    assert len(molecules) == 30
    for molecule in molecules:
        text = " " + molecule
        assert g.accepts(text), molecule
        assert bytes_accepted(g, text) == len(text)
    assert not g.accepts_prefix(" C)") and not g.accepts(" C(")


def spider_corruptions(query: str) -> list[str]:
    out = []
    m = re.search(r"\bSELECT\b", query, re.IGNORECASE)
    if m:
        out.append(query[: m.start()] + "SELCT" + query[m.end() :])
    m = re.search(r"\bFROM\s+(\w+)", query, re.IGNORECASE)
    if m:
        out.append(query[: m.start(1)] + "no_such_table" + query[m.end(1) :])
    cut = len(query) // 2
    out.append(query[:cut] + "#@!")
    return out


def test_spider_pinned_concert_singer():
    g = Grammar((FIXTURES / "concert_singer.lark").read_text())
    queries = json.loads((FIXTURES / "concert_singer_dev.json").read_text())["queries"]
    for query in queries:
        assert bytes_accepted(g, query) == len(query.encode()), query
        assert g.accepts(query)
        for bad in spider_corruptions(query):
            assert not g.accepts(bad), bad


SPIDER_SUBSET = ["concert_singer", "pets_1", "singer", "voter_1", "orchestra", "course_teach"]


@pytest.mark.skipif(not (SHARED / "spider" / "dev.json").is_file(), reason="shared Spider data absent")
def test_spider_gold_subset_with_all_prefixes():
    dev = json.loads((SHARED / "spider" / "dev.json").read_text())
    checked = 0
    for db in SPIDER_SUBSET:
        queries = [ex["query"] for ex in dev if ex["db_id"] == db][::3][:9]
        g = Grammar((SHARED / "spider" / "grammars" / f"{db}.lark").read_text())
        for query in queries:
            assert bytes_accepted(g, query) == len(query.encode()), (db, query)
            assert g.accepts(query), (db, query)
            # the same text in other chunkings: every character prefix too
            for cut in range(0, len(query), 7):
                assert g.accepts_prefix(query[:cut])
            for bad in spider_corruptions(query):
                assert not g.accepts(bad), (db, bad)
            checked += 1
    assert checked >= 50


# --- end to end ----------------------------------------------------------------------------


def test_generation_under_a_grammar_gives_only_parsable_texts():
    from conftest import hashed_model

    text = """
    start: expr
    ?expr: term (("+" | "-") term)*
    ?term: NUMBER | "(" expr ")"
    NUMBER: /[1-9]/
    """
    grammar = Grammar(text)
    parser = lark.Lark(text, parser="earley", lexer="dynamic_complete")
    model = hashed_model(tokens=("1", "2", "+", "(", ")", "-", "<eos>"), eos=6, seed=3)
    for method in ("awrs-smc", "masking-smc", "lcd"):
        result = awrs.generate(model, [], grammar, particles=8, max_tokens=7, method=method, seed=0)
        assert result.samples
        for sample in result.samples:
            if sample.valid:
                parser.parse(sample.text)
        assert all(grammar.accepts(t) for t in result.posterior)
        for t in result.posterior:
            parser.parse(t)


def test_cheap_grammar_checks_agree_with_advance():
    """The grammar checker's accepts_token (llguidance's validate_tokens, no copy) gives the
    same verdict as building the state, at random cuts of a long text, for every piece."""
    import random

    from awrs.constraints.base import DEAD
    from awrs.vocab import Vocabulary

    grammar = Grammar('start: sentence (" " sentence)*\nsentence: WORD (" " WORD)* "."\nWORD: /[a-z]+/')
    text = " ".join("the quick brown fox jumps over the lazy dog." for _ in range(12)).encode()
    pieces = (b" the", b"X", b" do", b". a", b"g.", b"g. t", b" ", b".", b"e", b"he", b"\xc3", b"ox j", b"<e>")
    vocab = Vocabulary(pieces, frozenset({len(pieces) - 1}))
    checker = grammar.compile(vocab)
    assert checker.cheap_checks
    rng = random.Random(0)
    for cut in rng.sample(range(len(text)), 40):
        state = grammar.advance(grammar.start(), text[:cut])
        for token in range(len(pieces) - 1):
            assert checker.accepts_token(state, token) == (grammar.advance(state, pieces[token]) is not DEAD)


def test_grammars_over_one_vocabulary_share_its_llguidance_tokenizer():
    """Indexing a vocabulary costs llguidance ~1 s at 262k tokens: once per vocabulary, not per
    grammar (an evaluation builds one per question); masks stay each grammar's own."""
    from awrs.constraints.grammar.grammar import vocabulary_tokenizer
    from awrs.vocab import Vocabulary

    pieces = (b"a", b"b", b"ab", b"<e>")
    vocab = Vocabulary(pieces, frozenset({3}))
    first, second = Grammar('start: "a"+'), Grammar('start: "b"+')
    assert first.compile(vocab)._encode is second.compile(vocab)._encode is vocabulary_tokenizer(vocab)[0]
    state = first.start()
    assert first.compile(vocab).token_mask(state).tolist() == [0]  # "ab" leaves the language
    assert second.compile(vocab).token_mask(second.start()).tolist() == [1]
    other = Vocabulary(pieces, frozenset({3}))
    assert first.compile(other)._encode is not first.compile(vocab)._encode


# --- states share one matcher per lineage ---------------------------------------------------


def _walk_shared_states(grammar: Grammar, reference: Grammar, pool: list, seed: int, steps: int) -> int:
    """Random operations on random states of ``pool`` (old ones included, so lineages are
    moved on and states left behind are used again), each compared with a state built from
    the start for the same text. Returns how many operations ran."""
    import random

    pieces = (b"[", b"1", b",", b"]", b"{", b'"a"', b":", b"}", b" ", b"tru", b"e", b"x", b'"', b"2.5", b"nul", b"l")
    rng = random.Random(seed)
    for _ in range(steps):
        state = pool[-1 - min(int(rng.expovariate(0.2)), len(pool) - 1)]  # mostly recent ones
        fresh = reference.advance(reference.start(), state.text) if state.text else reference.start()
        piece = rng.choice(pieces)
        operation = rng.choice((0, 0, 0, 1, 2, 3))  # mostly advances, to grow long chains
        if operation == 0:
            after = grammar.advance(state, piece)
            expected = reference.advance(fresh, piece)
            assert (after is DEAD) == (expected is DEAD), (state.text, piece)
            if after is not DEAD:
                assert after.text == state.text + piece
                pool.append(after)
        elif operation == 1:
            assert grammar.is_complete(state) == reference.is_complete(fresh), state.text
        elif operation == 2:
            assert grammar.next_bytes(state) == reference.next_bytes(fresh), state.text
        else:
            assert grammar._would_accept(state, piece) == (reference.advance(fresh, piece) is not DEAD)
    return steps


@pytest.mark.parametrize("threads", [1, 4])
def test_states_sharing_a_matcher_behave_like_states_built_afresh(threads):
    """advance moves a lineage's matcher on in place, and a state left behind gets a rolled-back
    copy when used again: every answer must equal that of a state built from the start, with
    states used in any order, and from several threads at once."""
    from concurrent.futures import ThreadPoolExecutor

    grammar, reference = Grammar(JSON_GRAMMAR), Grammar(JSON_GRAMMAR)
    pool = [grammar.start()]
    with ThreadPoolExecutor(threads) as workers:
        done = sum(workers.map(lambda seed: _walk_shared_states(grammar, reference, pool, seed, 400 // threads),
                               range(threads)))
    # long chains, not only short texts; with threads, how far lineages grow depends on how
    # they interleave (measured 35-43 states and 11-12 lengths; one thread: 95 and 32)
    assert done == 400 and len(pool) > (40 if threads == 1 else 20)
    assert len({len(state.text) for state in pool}) > (15 if threads == 1 else 6)


def test_the_start_state_is_never_moved_on(json_grammar):
    first = json_grammar.advance(json_grammar.start(), b"[1")
    assert json_grammar.start()._lineage is not first._lineage
    assert json_grammar.start()._lineage.text == b"" and json_grammar.advance(json_grammar.start(), b"{") is not DEAD


def test_an_unclosed_literal_is_refused_before_lark_can_hang_on_it():
    # Found by crash fuzzing: Lark's grammar lexer backtracks exponentially on an unclosed
    # literal full of backslashes (this one would take hours); it must be a prompt error.
    import threading

    from awrs.errors import ConfigError

    outcome = []

    def compile_it(text):
        try:
            Grammar(text)
        except ConfigError as err:
            outcome.append(str(err))

    for text in ('start: "\x1a' + "\\\\" * 40 + "on)", "start: /" + "\\\\" * 40 + "x"):
        worker = threading.Thread(target=compile_it, args=(text,), daemon=True)
        worker.start()
        worker.join(60)
        assert not worker.is_alive(), "compiling the grammar hung"
    assert len(outcome) == 2 and all("is never closed" in message for message in outcome)
    assert "string literal at line 1" in outcome[0] and "regex literal at line 1" in outcome[1]
