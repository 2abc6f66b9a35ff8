"""Regex token masks not computed before, on the embedded vocabulary: ms per mask.

    .venv/bin/python bench/regex_masks.py

For five patterns, up to 40 automaton states each in a seeded random order; every mask is the
first for its state (each pattern gets a fresh checker). Also the one-time byte-trie build.
Prints one JSON line.
"""

from __future__ import annotations

import json
import random
import statistics
import time

import awrs
from awrs.constraints import Regex

PATTERNS = [r"[A-Z][a-z ,']{8,150}\.", r"\d{4}-\d{2}-\d{2}", r"(yes|no), because [a-z ]{3,40}\.",
            r"[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-z]{2,6}", r"(\w+ ){2,8}\w+\."]
STATES_PER_PATTERN = 40


def main() -> None:
    vocab = awrs.load_model().vocab
    started = time.perf_counter()
    vocab.byte_trie  # noqa: B018 -- built once per vocabulary, timed apart
    trie_ms = 1000 * (time.perf_counter() - started)
    rng = random.Random(0)
    times = []
    for pattern in PATTERNS:
        checker = Regex(pattern).compile(vocab)
        states = list(range(checker.automaton.states))
        rng.shuffle(states)
        for state in states[:STATES_PER_PATTERN]:
            started = time.perf_counter()
            checker.token_mask(state)
            times.append(1000 * (time.perf_counter() - started))
    times.sort()
    print(json.dumps({"byte_trie_build_ms": round(trie_ms, 1), "masks": len(times),
                      "p50_ms": round(statistics.median(times), 3), "p90_ms": round(times[int(0.9 * len(times))], 3),
                      "max_ms": round(times[-1], 3)}))


if __name__ == "__main__":
    main()
