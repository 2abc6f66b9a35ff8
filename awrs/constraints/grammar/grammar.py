"""Grammar: texts in the language of a Lark grammar, checked on every prefix.

Lark's parsers answer "is this text a sentence", not "can this text still become one", so the
prefix check is done by a real incremental recognizer: the Earley parser of `llguidance`
(Rust, driven one byte at a time through a 256-token byte "tokenizer").

Exactness comes first. llguidance, like every lexer-based parser, decides where a terminal
ends greedily, and that rejects valid texts whenever one terminal can be a prefix of a longer
one (a literal ``"co"`` next to ``"concert"``: the Spider grammars are full of these), and it
does not accept ``%ignore``d text at the start. So the grammar is not handed over as written.
:mod:`awrs.constraints.grammar.compile` rewrites it with Lark's own loader into a grammar over
single characters, every terminal spelled out as rules from its regex, ``%ignore`` placed
explicitly, and the engine is left with no lexing decision at all. The language is the Lark
grammar read as a context-free grammar over characters, each terminal standing for every text
its regex matches in full -- the language of Lark's Earley parser with
``lexer='dynamic_complete'`` (tests compare the two on random grammars). One refinement: a
terminal with a lazy quantifier (``".*?"``, common's ``ESCAPED_STRING`` and ``C_COMMENT``)
matches only texts with no shorter match as a prefix, as Lark's lexers read it, so ``"a"b"`` is
not one string. So:

* a prefix is alive exactly when some continuation is in the language (the Earley chart after
  the prefix is non-empty: rules that derive nothing are removed beforehand), never rejected
  because a lexer guessed a token boundary;
* a text is complete exactly when it is in the language.

States are immutable values (their text), but they do not each hold a matcher: copying
llguidance's matcher costs time linear in the text (its Earley chart keeps a row per byte).
A chain of states shares one matcher, a *lineage*, which sits at the newest state's text.
``advance`` from that newest state feeds the new bytes to the lineage's matcher in place (cost:
the new bytes only); a state the lineage has moved past gets its own copy, rolled back to its
text, the first time it is used again (after resampling, only the second and later copies of a
particle pay). The start state is never advanced in place. A per-grammar lock keeps threads
that share states apart. Bytes of a character split across tokens are fed as they come: the
engine works on UTF-8 bytes. ``next_bytes`` is exact (the engine's mask over the 256 bytes), so samplers skip
every token whose first byte cannot follow.

Whole-vocabulary token masks come from the constraint's checker for a vocabulary
(:class:`GrammarChecker`, built by ``compile(vocab)``): a second llguidance matcher over the
model's own tokens, replayed to the state's text from the longest text it has replayed before.
Same grammar, same engine, so the mask is exactly the set of tokens ``advance`` accepts. Over
a character-level grammar a mask needs an Earley step per byte of the token trie: 5 ms at p50
and up to 465 ms (inside a literal) along Spider queries on the embedded 49k vocabulary
(``bench/grammar_masks.py``), where AWRS needs about two checks of ~20 us each: samplers use
masks only when a step's rejections have cost as much (see :mod:`awrs.sampling.samplers`).

Grammar text that Lark rejects, a terminal regex a context-free grammar cannot express
(lookaheads, anchors, backreferences), or a grammar too large for the engine raises
:class:`~awrs.errors.ConfigError` with a one-line message. If the engine ever hits one of its
work limits while parsing, ``advance`` raises :class:`~awrs.errors.ConstraintError` rather
than reject a prefix it could not decide.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from ...errors import ConfigError, ConstraintError
from ..base import DEAD, Constraint, State
from ..checker import NO_TOKENS, Checker
from .compile import CompiledGrammar, compile_grammar

if TYPE_CHECKING:
    from ...vocab import Vocabulary

# Earley rows of character-level grammars are wide; the engine's defaults (2,000 items a row)
# would turn "too much work" into a rejection, which the contract forbids.
MAX_ITEMS_IN_ROW = 1_000_000
# A token mask replays the text through llguidance and scans the vocabulary: 5 ms at p50, up to
# 465 ms at 49k tokens, against ~20 us a check (see Checker.mask_cost).
GRAMMAR_MASK_COST = 2048.0
STEP_MAX_ITEMS = 10_000_000
REPLAY_CACHE = 256  # token matchers kept per checker, by text

_COMPILE_CACHE_SIZE = 32
_compile_cache: OrderedDict[tuple[str, str], CompiledGrammar] = OrderedDict()
_compile_lock = threading.Lock()


def compiled(text: str, start: str) -> CompiledGrammar:
    """compile_grammar with a small per-process cache (Spider grammars take 0.3-5 s to load)."""
    key = (text, start)
    with _compile_lock:
        hit = _compile_cache.get(key)
        if hit is not None:
            _compile_cache.move_to_end(key)
            return hit
    result = compile_grammar(text, start)
    with _compile_lock:
        _compile_cache[key] = result
        while len(_compile_cache) > _COMPILE_CACHE_SIZE:
            _compile_cache.popitem(last=False)
    return result


def _llguidance():
    try:
        import llguidance
    except ImportError as err:  # pragma: no cover
        raise ConfigError("Grammar needs the 'llguidance' package (pip install llguidance)") from err
    return llguidance


class _ByteTokenizer:
    """256 one-byte tokens and an end token: lets llguidance be driven byte by byte."""

    eos_token_id = 256
    bos_token_id = None
    tokens = tuple(bytes([i]) for i in range(256)) + (b"<|end|>",)
    special_token_ids = (256,)

    def __call__(self, text):
        return list(text.encode("utf-8") if isinstance(text, str) else text)


@lru_cache(maxsize=1)
def byte_tokenizer():
    llg = _llguidance()
    return llg.LLTokenizer(llg.TokenizerWrapper(_ByteTokenizer()), slices=[])


class _VocabularyTokenizer:
    """A model vocabulary as llguidance expects a tokenizer (greedy longest-match encoding)."""

    def __init__(self, vocab) -> None:
        self.tokens = list(vocab.tokens)
        self.eos_token_id = min(vocab.eos_ids)
        self.bos_token_id = None
        self.special_token_ids = sorted(vocab.special_ids)
        self._ids = {}
        for i, token in enumerate(self.tokens):
            if token and i not in vocab.special_ids:
                self._ids.setdefault(token, i)
        self._longest = max((len(t) for t in self._ids), default=1)

    def __call__(self, text):
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        out, at = [], 0
        while at < len(data):
            for size in range(min(self._longest, len(data) - at), 0, -1):
                token = self._ids.get(data[at : at + size])
                if token is not None:
                    out.append(token)
                    at += size
                    break
            else:
                raise ValueError(f"byte {data[at]:#x} is not a token of this vocabulary")
        return out


_tokenizers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # vocabulary -> its llguidance pair
_tokenizers_lock = threading.Lock()


def vocabulary_tokenizer(vocab) -> tuple[_VocabularyTokenizer, object]:
    """``vocab`` as llguidance's tokenizer, built once per vocabulary and shared by every grammar
    over it (llguidance takes about 1 s to index a 262k vocabulary; a Spider run builds a
    grammar per question)."""
    with _tokenizers_lock:
        hit = _tokenizers.get(vocab)
        if hit is None:
            llg = _llguidance()
            encode = _VocabularyTokenizer(vocab)
            hit = _tokenizers[vocab] = (encode, llg.LLTokenizer(llg.TokenizerWrapper(encode)))
    return hit


class _Lineage:
    """One llguidance matcher shared by a chain of states; it sits after ``text``, the newest
    state's text (every older state's text is a prefix of it)."""

    __slots__ = ("broken", "matcher", "text")

    def __init__(self, matcher, text: bytes) -> None:
        self.matcher = matcher
        self.text = text
        self.broken: str | None = None  # the engine failed while this matcher was moved on


class GrammarState:
    """The grammar's state after some bytes: an immutable value, its text; the Earley chart
    comes from its lineage (see the module docstring)."""

    __slots__ = ("_lineage", "text")

    def __init__(self, lineage: _Lineage, text: bytes) -> None:
        self._lineage = lineage
        self.text = text  # bytes consumed so far (replayed for token masks)

    @property
    def length(self) -> int:
        return len(self.text)

    def __repr__(self) -> str:
        return f"GrammarState(after {len(self.text)} bytes)"


class Grammar(Constraint):
    """Texts in the language of a Lark grammar (see the module docstring for the semantics).

    Args:
        grammar: Lark grammar text (``%import common.X``, ``%ignore``, ``"kw"i``, regex
            terminals, templates, priorities).
        start: the start rule.
    """

    def __init__(self, grammar: str, start: str = "start") -> None:
        llg = _llguidance()
        self.source = grammar
        self.start_rule = start
        self.compiled = compiled(grammar, start)
        limits = llg.LLParserLimits(max_items_in_row=MAX_ITEMS_IN_ROW, step_max_items=STEP_MAX_ITEMS)
        try:
            matcher = llg.LLMatcher(
                byte_tokenizer(),
                llg.LLMatcher.grammar_from_lark(self.compiled.text),
                log_level=0,
                limits=limits,
            )
        except (ValueError, RuntimeError) as err:  # pragma: no cover - compile errors land in is_error
            raise ConfigError(f"grammar rejected by the engine: {_one_line(str(err))}") from None
        if matcher.is_error():
            raise ConfigError(f"grammar rejected by the engine: {_one_line(matcher.get_error())}")
        self._start = GrammarState(_Lineage(matcher, b""), b"")
        self._limits = limits
        self._lock = threading.RLock()  # every use of a lineage's matcher

    def describe(self) -> str:
        first = next((line.strip() for line in self.source.splitlines() if line.strip()), "")
        return f"grammar {first[:60]!r}"

    def __repr__(self) -> str:
        return f"Grammar(<{len(self.source)} chars>, start={self.start_rule!r})"

    def start(self) -> GrammarState:
        return self._start

    def _matcher_at(self, state: GrammarState):
        """The matcher after ``state.text`` (hold ``self._lock``): the lineage's own while it
        has not moved past the state, else a copy rolled back to it, which the state keeps."""
        lineage = state._lineage
        if lineage.broken is not None:
            raise ConstraintError(f"grammar engine failed earlier on this text: {lineage.broken}")
        behind = len(lineage.text) - len(state.text)
        if behind:
            matcher = lineage.matcher.deep_copy()
            matcher.rollback(behind)
            if matcher.is_error():  # pragma: no cover - rollback within the chart never fails
                raise ConstraintError(f"grammar engine failed: {_one_line(matcher.get_error())}")
            state._lineage = lineage = _Lineage(matcher, state.text)
        return lineage.matcher

    def advance(self, state: State, data: bytes) -> State:
        if not data:
            return state
        if self.compiled.empty_language:
            return DEAD
        with self._lock:
            matcher = self._matcher_at(state)
            if state is self._start:  # shared by every run: never moved on
                matcher = matcher.deep_copy()
                lineage = _Lineage(matcher, state.text)
            else:
                lineage = state._lineage
            consumed = matcher.try_consume_tokens(list(data))
            if matcher.is_error():
                lineage.broken = _one_line(matcher.get_error())
                raise ConstraintError(f"grammar engine failed: {lineage.broken}")
            if consumed < len(data):
                if consumed:
                    matcher.rollback(consumed)
                return DEAD
            lineage.text = state.text + data
            return GrammarState(lineage, lineage.text)

    def _would_accept(self, state: State, data: bytes) -> bool:
        """Whether ``advance(state, data)`` would not be DEAD, without building the state."""
        if not data:
            return True
        if self.compiled.empty_language:
            return False
        with self._lock:
            return self._matcher_at(state).validate_tokens(list(data)) == len(data)

    def is_complete(self, state: State) -> bool:
        if self.compiled.empty_language:
            return False
        with self._lock:
            return bool(self._matcher_at(state).is_accepting())

    def next_bytes(self, state: State) -> frozenset[int] | None:
        if self.compiled.empty_language:
            return frozenset()
        with self._lock:
            matcher = self._matcher_at(state)
            if matcher.is_stopped():
                return frozenset()
            mask = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
        bits = np.unpackbits(mask, bitorder="little")[:256]
        return frozenset(np.flatnonzero(bits).tolist())

    def _checker(self, vocab: Vocabulary) -> Checker:
        return GrammarChecker(self, vocab)


class GrammarChecker(Checker):
    """A grammar over one vocabulary: exact token masks from an llguidance token matcher.

    The matcher runs the same grammar over the model's tokens. A mask needs the matcher at the
    state's text; matchers already replayed are kept (by text, most recent first), and a new
    text is replayed from the longest kept prefix -- a particle's text grows one token at a
    time, so that is usually the text of its previous step. Masks are kept by text too: after
    resampling, particles share texts, and equal texts have equal masks.
    """

    exact_masks = True
    mask_cost = GRAMMAR_MASK_COST
    # A check asks the state's matcher how many bytes it would take (a few us, the matcher left
    # where it was); building a state moves the lineage's matcher on, so a second candidate
    # from the same state would need a copy rolled back to it.
    cheap_checks = True

    def __init__(self, constraint: Grammar, vocab: Vocabulary) -> None:
        super().__init__(constraint, vocab)
        llg = _llguidance()
        self._empty_language = constraint.compiled.empty_language
        self._encode, tokenizer = vocabulary_tokenizer(vocab)
        # no_forcing: without it llguidance allows only the greedy tokenization of forced
        # text ("SELECT " but not "S" at the start), fewer tokens than advance accepts
        grammar = llg.LLMatcher.grammar_from_lark('%llguidance {"no_forcing": true}\n' + constraint.compiled.text)
        matcher = llg.LLMatcher(tokenizer, grammar, log_level=0, limits=constraint._limits)
        if matcher.is_error():  # pragma: no cover - the byte-level matcher compiled the same grammar
            raise ConstraintError(f"grammar engine failed: {_one_line(matcher.get_error())}")
        self._replayed: OrderedDict[bytes, object] = OrderedDict({b"": matcher})
        self._masks: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._longest_token = max((len(t) for t in vocab.tokens), default=1)
        self._special = np.fromiter(vocab.special_ids, dtype=np.int64)
        self._lock = threading.Lock()

    def accepts_token(self, state: State, token: int) -> bool:
        return self.constraint._would_accept(state, self.vocab.tokens[token])

    def token_mask(self, state: State) -> np.ndarray | None:
        if self._empty_language:
            return NO_TOKENS
        text = state.text
        with self._lock:
            known = self._masks.get(text)
            if known is not None:  # particles that share a text (after resampling) share its mask
                self._masks.move_to_end(text)
                return known
            matcher = self._matcher_after(text)
        if matcher is None:  # text this vocabulary cannot spell greedily: no mask, checks only
            return None
        if matcher.is_stopped():
            mask = NO_TOKENS
        else:
            bits = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
            allowed = np.flatnonzero(bits[: len(self.vocab)])
            mask = allowed[~np.isin(allowed, self._special)].astype(np.int64)
        with self._lock:
            self._masks[text] = mask
            while len(self._masks) > REPLAY_CACHE:
                self._masks.popitem(last=False)
        return mask

    def _matcher_after(self, text: bytes):
        """The token matcher after ``text`` (kept for later masks), or None if unspellable."""
        replayed = self._replayed
        for cut in range(len(text), max(len(text) - self._longest_token, 0) - 1, -1):
            base = replayed.get(text[:cut])
            if base is not None:
                break
        else:
            cut, base = 0, replayed[b""]
        if cut == len(text):
            replayed.move_to_end(text)
            return base
        try:
            ids = self._encode(text[cut:])
        except ValueError:
            return None
        matcher = base.deep_copy()
        if matcher.try_consume_tokens(ids) < len(ids):
            raise ConstraintError("the grammar's token matcher rejected a text its byte matcher accepted")
        if matcher.is_error():
            raise ConstraintError(f"grammar engine failed: {_one_line(matcher.get_error())}")
        replayed[text] = matcher
        while len(replayed) > REPLAY_CACHE:
            oldest = next(iter(replayed))
            if oldest == b"":  # the empty text's matcher stays: every replay may start there
                replayed.move_to_end(oldest)
                oldest = next(iter(replayed))
            del replayed[oldest]
        return matcher


def _one_line(message: str) -> str:
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return lines[0][:300] if lines else "unknown error"
