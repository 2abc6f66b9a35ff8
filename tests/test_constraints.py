"""Regex and Predicate constraints: semantics, UTF-8 handling, errors, and the prefix contract."""

from __future__ import annotations

import pytest
import regex
from hypothesis import example, given, settings
from hypothesis import strategies as st

from awrs.constraints import DEAD, Predicate, Regex
from awrs.errors import ConfigError, ConstraintError


@pytest.mark.parametrize(
    "pattern, prefixes, wholes, rejected",
    [
        (r"\d{4}-\d\d", ["", "20", "2024-"], ["2024-01"], ["2024-1x", "x", "2024-011"]),
        (r"(a)\1b", ["a", "aa"], ["aab"], ["ab", "aac"]),  # backreference
        # lookahead; partial matching alone is loose here (a lookahead reaching the end of the
        # text counts as partial, so "ab-" would live), the pattern without it is not
        (r"(?=.*\d)[a-z\d]{3}", ["ab", "a1"], ["ab1", "1ab"], ["ab-", "Ab"]),
        (r"(?<!x)y+", ["y"], ["yyy"], ["x"]),  # lookbehind
        (r"\p{Lu}\p{Ll}+", ["É", "Éc"], ["École"], ["é"]),  # Unicode properties
        (r"[[a-z]--[aeiou]]+", ["b"], ["bcd"], ["a"]),  # set operations (V1 syntax)
        (r"(?i)hello", ["HE"], ["HeLLo"], ["help"]),
    ],
)
@pytest.mark.parametrize("engine", ["auto", "backtracking"])
def test_regex_semantics(pattern, prefixes, wholes, rejected, engine):
    flags = regex.V1 if "--" in pattern else 0
    constraint = Regex(pattern, flags, engine=engine)
    for text in prefixes:
        assert constraint.accepts_prefix(text), text
    for text in wholes:
        assert constraint.accepts(text) and constraint.accepts_prefix(text), text
    for text in rejected:
        assert not constraint.accepts_prefix(text), text
    for text in prefixes:
        if not regex.fullmatch(pattern, text, flags=flags):
            assert not constraint.accepts(text), text


@pytest.mark.parametrize("engine", ["automaton", "backtracking"])
def test_utf8_split_across_advances(engine):
    constraint = Regex("é+", engine=engine)
    data = "éé".encode()
    state = constraint.start()
    for byte in data:  # one byte at a time, as byte-fallback tokens would arrive
        state = constraint.advance(state, bytes([byte]))
        assert state is not DEAD
    assert constraint.is_complete(state)
    half = constraint.advance(constraint.start(), data[:1])
    assert half is not DEAD and not constraint.is_complete(half)
    assert constraint.advance(constraint.start(), b"\xff") is DEAD  # never valid UTF-8
    assert constraint.advance(constraint.start(), b"\xc3(") is DEAD  # broken sequence


def test_an_unfinished_character_lives_only_if_one_of_its_completions_fits():
    """A dead end the evaluation met: after 'z', the pattern (the regex package reads ``&&``
    literally without V1, so a letter class then ']') needs ']'; an unfinished 3- or 4-byte
    character cannot be it, although some character may follow 'z'."""
    constraint = Regex(r"[\p{Letter}&&[^\p{Lu}]]", engine="backtracking")
    after = constraint.advance(constraint.start(), b"z")
    assert after is not DEAD and constraint.accepts("z]")
    assert constraint.advance(after, b"\xe2") is DEAD  # U+2000..U+2FFF: 4,096 completions
    assert constraint.advance(after, b"\xf0\x9f") is DEAD  # U+1F000..U+1FFFF
    letters = Regex(r"[a-z]\p{Letter}+", engine="backtracking")
    assert letters.advance(letters.advance(letters.start(), b"z"), b"\xe2") is not DEAD  # U+2C00.. are letters


@pytest.mark.parametrize("engine", ["automaton", "backtracking"])
def test_pending_bytes_after_a_final_match_are_rejected(engine):
    """A token that starts a multi-byte character cannot follow a text that admits no more."""
    constraint = Regex(r"\d{2}", engine=engine)
    final = constraint.advance(constraint.start(), b"12")
    assert constraint.advance(final, b"\xf0\x9f") is DEAD
    assert constraint.next_bytes(final) == frozenset()  # only EOS may follow
    dot = Regex(r".+", engine=engine)
    pending = dot.advance(dot.start(), b"\xe2\x82")
    assert dot.next_bytes(pending) == frozenset(range(0x80, 0xC0))
    if engine == "backtracking":  # its hint is only "anything" or "nothing"
        assert constraint.next_bytes(constraint.advance(constraint.start(), b"1")) is None
        # recursion through the whole pattern cannot be wrapped: the hint stays conservative
        assert Regex(r"a(?R)?b").next_bytes(Regex(r"a(?R)?b").advance(("", b""), b"ab")) is None
    else:  # the automaton's hint is exact: ASCII digits, and lead bytes of other Unicode digits
        hint = constraint.next_bytes(constraint.advance(constraint.start(), b"1"))
        assert frozenset(b"0123456789") <= hint and not hint & frozenset(b"-a ") and 0xD9 in hint


@pytest.mark.parametrize("pattern", ["a(", "[z-a]", "(?P<1x>a)", "a{2,1}", "\\"])
def test_invalid_regex_is_a_config_error_naming_the_problem(pattern):
    with pytest.raises(ConfigError) as info:
        Regex(pattern)
    message = str(info.value)
    assert "invalid regex" in message and pattern in message
    assert isinstance(info.value, ValueError)
    assert "\n" not in message


def test_regex_time_limit(monkeypatch):
    constraint = Regex(r"\d+", timeout=0.01, engine="backtracking")

    def slow(*args, **kwargs):
        raise TimeoutError("regex timed out")

    monkeypatch.setattr(constraint, "_compiled", type("C", (), {"fullmatch": staticmethod(slow)})())
    monkeypatch.setattr(constraint, "_extendable", None)
    # a prefix check that times out keeps the prefix (safe); a completion check rejects it
    state = constraint.advance(constraint.start(), b"12")
    assert state is not DEAD
    assert not constraint.is_complete(state)
    assert constraint.timeouts == 2


def test_predicate_constraint():
    constraint = Predicate(lambda s: s.islower() or s == "", lambda s: s.endswith("z"), name="lower-z")
    assert constraint.accepts_prefix("abc") and not constraint.accepts_prefix("aBc")
    assert constraint.accepts("abz") and not constraint.accepts("abc")
    assert "lower-z" in constraint.describe()


def test_predicate_errors_are_reported_with_context():
    def broken(text: str) -> bool:
        raise KeyError("boom")

    with pytest.raises(ConstraintError, match="KeyError"):
        Predicate(broken).accepts_prefix("abc")
    with pytest.raises(ConfigError):
        Predicate("not a function")


# --- properties of the prefix contract ---------------------------------------------------------

PATTERNS = [r"(ab|a)*c?", r"(a|b)\1", r"a(?=b)b+", r"[ab]{2,3}c", r"(?:é|e)+b?", r"\w+(?<!a)"]
texts = st.text(alphabet="abcé€ \n", max_size=8)


@settings(max_examples=150, deadline=None)
@given(pattern=st.sampled_from(PATTERNS), text=texts)
@example(pattern=r"(a|b)\1", text="aa")
def test_valid_texts_have_every_prefix_accepted(pattern, text):
    constraint = Regex(pattern)
    data = text.encode()
    if constraint.accepts(data):
        for cut in range(len(data) + 1):  # byte cuts, including inside multi-byte characters
            assert constraint.accepts_prefix(data[:cut]), (pattern, data[:cut])


@settings(max_examples=150, deadline=None)
@given(pattern=st.sampled_from(PATTERNS), text=texts, more=texts)
def test_rejected_prefixes_have_no_valid_extension(pattern, text, more):
    constraint = Regex(pattern)
    if not constraint.accepts_prefix(text):
        assert not constraint.accepts(text + more)
        assert not constraint.accepts_prefix(text + more)


@settings(max_examples=150, deadline=None)
@given(pattern=st.sampled_from(PATTERNS), data=st.binary(max_size=10), split=st.integers(0, 10))
def test_arbitrary_bytes_never_raise_and_splitting_does_not_matter(pattern, data, split):
    constraint = Regex(pattern)
    whole = constraint.advance(constraint.start(), data)
    head = constraint.advance(constraint.start(), data[:split])
    parts = DEAD if head is DEAD else constraint.advance(head, data[split:])
    assert (whole is DEAD) == (parts is DEAD) or head is DEAD
    if whole is not DEAD and parts is not DEAD:
        assert constraint.is_complete(whole) == constraint.is_complete(parts)
    assert constraint.accepts(data) == (
        regex.fullmatch(pattern, data.decode("utf-8", errors="strict")) is not None
        if _is_utf8(data) else False
    )


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_unfinished_characters_that_cannot_match_are_rejected_early():
    ascii_only = Regex(r"[ab]+")
    assert ascii_only.advance(ascii_only.start(), "é".encode()[:1]) is DEAD  # 64 completions probed
    accented = Regex(r"caf[éè]")
    state = accented.advance(accented.start(), b"caf\xc3")
    assert state is not DEAD and accented.is_complete(accented.advance(state, b"\xa9"))
    assert accented.advance(accented.start(), b"caf\xc4") is DEAD  # Ā..Ŀ cannot be é or è
    quote = Regex(r"“[a-z]+”")
    assert quote.advance(quote.start(), "“".encode()[:2]) is not DEAD  # 64 candidates, one fits
    assert quote.advance(quote.start(), "—".encode()[:2]) is not DEAD  # same 64 as the quote
    assert quote.advance(quote.start(), "€".encode()[:2]) is DEAD


def test_utf8_completion_ranges():
    from awrs.constraints.regex.pattern import utf8_completions

    assert utf8_completions(b"\xc3") == (0xC0, 0xFF)
    assert utf8_completions(b"\xe2\x80") == (0x2000, 0x203F)
    assert utf8_completions(b"\xe0") == (0x800, 0xFFF)
    assert utf8_completions(b"\xf4\x8f") == (0x10F000, 0x10FFFF)
