"""Regular languages as byte automata: exact prefix checks and cached whole-vocabulary masks.

A regular expression without lookarounds or backreferences is compiled (by
:mod:`awrs.constraints.regex.dfa`, Python ``re`` semantics) into a DFA over characters. This
module turns that DFA into a DFA over UTF-8 bytes, so that

* a prefix check is one table lookup per byte, and a prefix is alive exactly when it can still
  be completed (every state reaches acceptance; the dead state is -1);
* the set of tokens allowed after a state -- a *token mask* -- is computed for the whole
  vocabulary at once with numpy (one vectorised transition per depth of the vocabulary's byte
  trie) by the constraint's :class:`AutomatonChecker`, and cached there per state. A regular pattern visits few states, so after the first steps a mask costs a dict
  lookup. Because checks and masks come from the same automaton, the mask is exactly the set
  of tokens a check accepts.

UTF-8 compilation. After a lead byte, the code points still possible form an aligned interval;
an intermediate state is "k continuation bytes to go, and this map from the interval's code
points to character states" (stored relative to the interval's start, so that equal maps share
one state). Overlong forms, surrogates and code points above U+10FFFF lead nowhere.

Not here: the regex-to-character-DFA compiler (``dfa.py``), the Regex constraint that
chooses this path (``pattern.py``), and sampling with masks (:mod:`awrs.sampling.samplers`).
"""

from __future__ import annotations

import bisect
import threading
from array import array
from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np

from ..checker import Checker
from .dfa import DFA

if TYPE_CHECKING:
    from ...vocab import Vocabulary
    from ..base import Constraint

DEAD_STATE = -1
MAX_BYTE_STATES = 100_000
MASK_CACHE_STATES = 512

# (first code point, last code point, character state), sorted, relative to an interval start
Segments = tuple[tuple[int, int, int], ...]


class AutomatonTooLarge(ValueError):
    """The byte automaton would exceed MAX_BYTE_STATES."""


class ByteAutomaton:
    """A DFA over bytes accepting the UTF-8 encodings of a character DFA's language.

    States are ints; ``-1`` is dead. ``table[s, b]`` is the next state. State 0 is the start.
    """

    def __init__(self, dfa: DFA, max_states: int = MAX_BYTE_STATES) -> None:
        if dfa.empty:
            self.table = np.full((1, 256), DEAD_STATE, dtype=np.int32)
            self.accepting = np.zeros(1, dtype=bool)
            self.empty = True
        else:
            self.empty = False
            self._build(dfa, max_states)
        # checks index a flat array of the table (4 bytes a cell, unlike lists of ints);
        # masks use a copy whose dead state is a real row that maps to itself
        self._cells = array("i", self.table.tobytes())
        dead = len(self.table)
        padded = np.vstack([np.where(self.table < 0, dead, self.table), np.full((1, 256), dead)])
        self._flat = padded.astype(np.int32).ravel()

    # -- construction ----------------------------------------------------------------------

    def _build(self, dfa: DFA, max_states: int) -> None:
        n_chars = len(dfa.edges)
        segments = []
        for edges in dfa.edges:
            segs = sorted((lo, hi, t) for t, ranges in edges.items() for lo, hi in ranges)
            segments.append(tuple(segs))
        rows: list[list[int]] = []
        index: dict[tuple[int, Segments], int] = {}
        pending: list[tuple[int, Segments]] = []

        def intermediate(k: int, segs: Segments) -> int:
            if not segs:
                return DEAD_STATE
            key = (k, segs)
            found = index.get(key)
            if found is None:
                found = n_chars + len(pending)
                if found >= max_states:
                    raise AutomatonTooLarge(f"more than {max_states} byte-automaton states")
                index[key] = found
                pending.append(key)
            return found

        def lookup(segs: Segments, cp: int) -> int:
            i = bisect.bisect_right(segs, (cp, 0x10FFFF + 1, 0)) - 1
            if i >= 0 and segs[i][0] <= cp <= segs[i][1]:
                return segs[i][2]
            return DEAD_STATE

        def clip(segs: Segments, lo: int, hi: int, base: int) -> Segments:
            """Segments within [lo, hi] (absolute), re-based to ``base``."""
            out = []
            start = max(bisect.bisect_right(segs, (lo, -1, -1)) - 1, 0)
            for a, b, t in segs[start:]:
                if a > hi:
                    break
                if b < lo:
                    continue
                out.append((max(a, lo) - base, min(b, hi) - base, t))
            return tuple(out)

        for s in range(n_chars):
            segs = segments[s]
            row = [DEAD_STATE] * 256
            for b in range(0x80):
                row[b] = lookup(segs, b)
            for b in range(0xC2, 0xF5):
                if b < 0xE0:
                    k, base, smallest = 1, (b & 0x1F) << 6, 0x80
                elif b < 0xF0:
                    k, base, smallest = 2, (b & 0x0F) << 12, 0x800
                else:
                    k, base, smallest = 3, (b & 0x07) << 18, 0x10000
                lo, hi = max(base, smallest), min(base + (1 << (6 * k)) - 1, 0x10FFFF)
                row[b] = intermediate(k, clip(segs, lo, hi, base)) if lo <= hi else DEAD_STATE
            rows.append(row)
        done = 0
        while done < len(pending):
            k, segs = pending[done]
            done += 1
            row = [DEAD_STATE] * 256
            width = 1 << (6 * (k - 1))
            for c in range(64):
                lo = c * width
                if k == 1:
                    row[0x80 + c] = lookup(segs, lo)
                else:
                    row[0x80 + c] = intermediate(k - 1, clip(segs, lo, lo + width - 1, lo))
            rows.append(row)
        self.table = np.array(rows, dtype=np.int32)
        accepting = np.zeros(len(rows), dtype=bool)
        accepting[list(dfa.accepting)] = True
        self.accepting = accepting

    # -- checks ----------------------------------------------------------------------------

    @property
    def states(self) -> int:
        return len(self.table)

    def advance(self, state: int, data: bytes) -> int:
        """The state after ``data``, or -1 once no completion is possible."""
        cells = self._cells
        for byte in data:
            state = cells[(state << 8) | byte]
            if state < 0:
                return DEAD_STATE
        return state

    def is_accepting(self, state: int) -> bool:
        return state >= 0 and bool(self.accepting[state])

    def next_bytes(self, state: int) -> frozenset[int]:
        return frozenset(np.flatnonzero(self.table[state] >= 0).tolist())

    def min_completion_bytes(self, state: int) -> int:
        """The length of the shortest byte string that takes ``state`` to acceptance."""
        distances = self.__dict__.get("_distances")
        if distances is None:
            distances = self.__dict__.setdefault("_distances", _distances_to_acceptance(self.table, self.accepting))
        return max(int(distances[state]), 0)  # -1: an empty language's start state



def _distances_to_acceptance(table: np.ndarray, accepting: np.ndarray) -> np.ndarray:
    """Bytes from each state to the nearest accepting one: breadth-first over reversed edges.

    Every live state reaches acceptance (dead ends are pruned to -1), so every entry is finite.
    """
    n = len(table)
    sources, _ = np.nonzero(table >= 0)
    targets = table[table >= 0]
    order = np.argsort(targets, kind="stable")
    by_target, starts = sources[order], np.searchsorted(targets[order], np.arange(n + 1))
    distance = np.full(n, -1, dtype=np.int64)
    frontier = np.flatnonzero(accepting)
    distance[frontier] = 0
    steps = 0
    while len(frontier):
        steps += 1
        previous = np.unique(np.concatenate([by_target[starts[s]:starts[s + 1]] for s in frontier]))
        frontier = previous[distance[previous] < 0]
        distance[frontier] = steps
    return distance


class AutomatonChecker(Checker):
    """A regular constraint over one vocabulary: exact masks, cached per automaton state."""

    exact_masks = True

    def __init__(self, constraint: Constraint, vocab: Vocabulary, automaton: ByteAutomaton, mask_cost: float) -> None:
        super().__init__(constraint, vocab)
        self.automaton = automaton
        self.mask_cost = mask_cost
        self._masks: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def token_mask(self, state: int) -> np.ndarray:
        """Ids of the non-special tokens whose bytes lead from ``state`` to a live state."""
        with self._lock:
            hit = self._masks.get(state)
            if hit is not None:
                self._masks.move_to_end(state)
                return hit
        automaton = self.automaton
        ids = _walk(automaton._flat, automaton.states, state, self.vocab)
        with self._lock:
            self._masks[state] = ids
            while len(self._masks) > MASK_CACHE_STATES:
                self._masks.popitem(last=False)
        return ids

    def mask_key(self, state: int) -> int:
        return state  # equal automaton states have equal masks


def _walk(flat: np.ndarray, dead: int, state: int, vocab: Vocabulary) -> np.ndarray:
    """Run the automaton from ``state`` over the vocabulary's byte trie, one depth per step.

    ``flat[s * 256 + b]`` is the transition table with the dead state numbered ``dead`` (which
    maps to itself). Every prefix shared by several tokens is read once.
    """
    trie = vocab.byte_trie
    allowed = np.zeros(len(vocab.tokens), dtype=bool)  # marking, not sorting: O(V), not O(V log V)
    states = np.array([state], dtype=np.int64)
    for parents, bytes_, (end_nodes, end_ids) in zip(trie.parents, trie.bytes_, trie.ends):
        states = flat[states[parents] * 256 + bytes_]
        if len(end_ids):
            allowed[end_ids[states[end_nodes] != dead]] = True
        if not (states != dead).any():
            break
    return np.flatnonzero(allowed)
