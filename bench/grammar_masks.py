"""Grammar token masks along Spider queries, on the embedded vocabulary: ms per mask.

    .venv/bin/python bench/grammar_masks.py [--data ../shared/data/spider] [--queries 4]

For three Spider databases, the first ``--queries`` gold queries of each, cut after every token
of the model's own tokenization: the mask of each prefix's state from ``Grammar``'s checker
(llguidance over the character-level grammar; masks are not cached across prefixes, matchers
replayed to earlier prefixes are, as in a run). For comparison, the grammar as written handed
to llguidance directly (its own greedy lexer: a different language, which is why awrs does not
do this): its masks along the same queries, up to the first token it rejects, and how many gold
queries it rejects. If the ``xgrammar`` package can be imported
(it is not one of awrs's dependencies: install it elsewhere and put it on PYTHONPATH), the same
character-level grammar is also handed to XGrammar and each of its masks is compared with
llguidance's: a byte-level engine with no lexer, so it keeps the language, unlike a lexer-based
one. Prints one JSON line per engine.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import statistics
import time
from pathlib import Path

import numpy as np

import awrs
from awrs.constraints.grammar.compile import strip_empty_literals
from awrs.constraints.grammar.grammar import Grammar, GrammarChecker, _llguidance, _VocabularyTokenizer

DATABASES = ("concert_singer", "pets_1", "car_1")


def gold_queries(data: Path, database: str, count: int) -> list[str]:
    queries = []
    for line in (data / "dev_gold.sql").read_text().splitlines():
        query, _, db = line.rpartition("\t")
        if db == database and query not in queries:
            queries.append(query)
    return queries[:count]


def _code_point(match: re.Match) -> str:
    value = int(match.group(1), 16)
    return f"\\U{value:08X}" if value > 0xFFFF else f"\\u{value:04X}"


def xgrammar_ebnf(compiled_text: str) -> str:
    """awrs's character-level llguidance grammar as XGrammar EBNF (the same rules, the
    one-character lexemes inlined as character classes)."""
    rules: list[list[str]] = []
    for line in compiled_text.splitlines():
        if not line.strip():
            continue
        alternative = re.match(r"^\s+\| (.*)$", line)
        if alternative:
            rules[-1][1] += " | " + alternative.group(1)
            continue
        name, body = line.split(": ", 1)
        rules.append([name, body])
    classes = {name: "[" + re.sub(r"\\x\{([0-9A-F]+)\}", _code_point, body[2:-2]) + "]"
               for name, body in rules if body.startswith("/[") and body.endswith("]/")}
    inline = re.compile(r"\b(" + "|".join(map(re.escape, classes)) + r")\b") if classes else None
    lines = []
    for name, body in rules:
        if name not in classes:
            lines.append(f"{name} ::= " + (inline.sub(lambda m: classes[m.group(1)], body) if inline else body))
    return "\n".join(lines)


class XGrammarMasks:
    def __init__(self, xgrammar, compiled_text: str, vocab) -> None:
        self.xgr = xgrammar
        info = xgrammar.TokenizerInfo(list(vocab.tokens), vocab_type=xgrammar.VocabType.RAW,
                                      vocab_size=len(vocab), stop_token_ids=sorted(vocab.eos_ids))
        self.grammar = xgrammar.GrammarCompiler(info).compile_grammar(xgrammar_ebnf(compiled_text),
                                                                      root_rule_name="start")
        self.bitmask = xgrammar.allocate_token_bitmask(1, len(vocab))
        self.size = len(vocab)
        self.special = np.fromiter(vocab.special_ids, dtype=np.int64)

    def mask(self, text: bytes) -> np.ndarray:
        matcher = self.xgr.GrammarMatcher(self.grammar, terminate_without_stop_token=False)
        if text and not matcher.accept_string(text.decode("utf-8")):
            raise AssertionError(f"XGrammar rejected a prefix awrs accepts: {text!r}")
        matcher.fill_next_token_bitmask(self.bitmask)
        bits = np.unpackbits(self.bitmask.numpy().view(np.uint8), bitorder="little")[: self.size]
        allowed = np.flatnonzero(bits)
        return allowed[~np.isin(allowed, self.special)]


class LexedAsWritten:
    """The grammar text as llguidance reads it itself (its lexer decides where terminals end)."""

    def __init__(self, grammar: Grammar, vocab) -> None:
        llg = _llguidance()
        tokenizer = llg.LLTokenizer(llg.TokenizerWrapper(_VocabularyTokenizer(vocab)))
        text = '%llguidance {"no_forcing": true}\n' + strip_empty_literals(grammar.source)
        self.matcher = llg.LLMatcher(tokenizer, llg.LLMatcher.grammar_from_lark(text), log_level=0,
                                     limits=grammar._limits)
        if self.matcher.is_error():
            raise RuntimeError(self.matcher.get_error())

    def masks_until_rejected(self, ids: list[int], times: list[float]) -> bool:
        """Time the mask before each token; False at the first token the matcher rejects."""
        matcher = self.matcher.deep_copy()
        for token in [None, *ids]:
            if token is not None and matcher.try_consume_tokens([token]) != 1:
                return False
            started = time.perf_counter()
            matcher.compute_bitmask()
            times.append(1000 * (time.perf_counter() - started))
        return True


def summary(engine: str, times: list[float], **extra) -> str:
    times = sorted(times)
    return json.dumps({"engine": engine, "masks": len(times), "p50_ms": round(statistics.median(times), 2),
                       "p90_ms": round(times[int(0.9 * len(times))], 2), "max_ms": round(times[-1], 2),
                       "mean_ms": round(statistics.fmean(times), 2), **extra})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/spider")
    parser.add_argument("--queries", type=int, default=4)
    args = parser.parse_args()
    try:
        import xgrammar
    except ImportError:
        xgrammar = None
    model = awrs.load_model()
    vocab = model.vocab
    llguidance_ms, xgrammar_ms, identical = [], [], 0
    as_written_ms, as_written_rejected, queries = [], 0, 0
    for database in DATABASES:
        grammar = Grammar((args.data / "grammars" / f"{database}.lark").read_text())
        xgr_masks = XGrammarMasks(xgrammar, grammar.compiled.text, vocab) if xgrammar else None
        as_written = LexedAsWritten(grammar, vocab)
        for query in gold_queries(args.data, database, args.queries):
            ids = model.encode(query)
            queries += 1
            as_written_rejected += not as_written.masks_until_rejected(ids, as_written_ms)
            checker = GrammarChecker(grammar, vocab)  # no masks cached from earlier queries
            text, state = b"", grammar.start()
            for token in [None, *ids]:
                if token is not None:
                    text += vocab.tokens[token]
                    state = grammar.advance(state, vocab.tokens[token])
                started = time.perf_counter()
                mask = checker.token_mask(state)
                llguidance_ms.append(1000 * (time.perf_counter() - started))
                if xgr_masks is not None:
                    started = time.perf_counter()
                    other = xgr_masks.mask(text)
                    xgrammar_ms.append(1000 * (time.perf_counter() - started))
                    if not np.array_equal(other, mask):
                        raise AssertionError(f"the engines' masks differ after {text!r}")
                    identical += 1
    print(summary("awrs (llguidance, character-level grammar)", llguidance_ms, databases=list(DATABASES),
                  gold_queries=queries))
    print(summary("llguidance, grammar as written (greedy lexer)", as_written_ms,
                  gold_queries_rejected=as_written_rejected))
    if xgrammar is not None:
        print(summary(f"xgrammar {importlib.metadata.version('xgrammar')} (awrs's character-level grammar)",
                      xgrammar_ms, identical_to_awrs=identical))
    else:
        print(json.dumps({"engine": "xgrammar", "skipped": "not importable"}))


if __name__ == "__main__":
    main()
