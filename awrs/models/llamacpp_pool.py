"""The sequence ids of one llama.cpp context: which are free, and which unclosed sessions left behind.

A row of a decoding session is a llama.cpp sequence id; the context has ``size`` of them (plus
one reserved for the prompt). Removing an id's cells (``llama_memory_seq_rm``) frees them;
copying (``llama_memory_seq_cp``) tags a parent's cells with a child's id, no K/V data copied.
A session garbage-collected without ``close()`` hands its ids back through :meth:`adopt`; they
are freed at the next open or step (never from the collector's thread).
"""

from __future__ import annotations

import weakref

from ..errors import ModelError
from .llamacpp_lib import limit_hint

MAX_SEQ = 255  # llama.cpp allows 256 sequence ids (LLAMA_MAX_SEQ); one is the prompt's


class SequencePool:
    """The ``size`` row ids of one context (the prompt's id is not among them)."""

    def __init__(self, lib, memory, size: int) -> None:
        self._lib, self._mem, self.size = lib, memory, size
        self._free: list[int] = list(range(size - 1, -1, -1))  # pop() gives 0 first
        self._orphans: list[int] = []  # ids of sessions garbage-collected unclosed; freed lazily

    def in_use(self) -> int:
        return self.size - len(self._free)

    def adopt(self, owner, seqs: list[int]) -> weakref.finalize:
        """Hand ``seqs`` back (lazily) if ``owner`` is collected without being closed."""
        return weakref.finalize(owner, self._orphans.extend, seqs)

    def collect_orphans(self) -> None:
        while self._orphans:
            self.release(self._orphans.pop())

    def release(self, seq: int) -> None:
        self._lib.llama_memory_seq_rm(self._mem, seq, -1, -1)
        self._free.append(seq)

    def require(self, wanted: int, held: int) -> None:
        """Fail unless ``wanted`` more ids are free for a session holding ``held``."""
        if wanted > 0 and wanted > len(self._free):
            raise ModelError(
                f"a session needs {held + wanted} rows but the llamacpp backend holds at most "
                f"n_seq_max={self.size} rows at once ({self.in_use()} in use by open sessions); "
                + limit_hint("n_seq_max") + f" (at most {MAX_SEQ}), or use fewer particles"
            )

    def copy_of(self, source: int) -> int:
        """A free id whose cells are now ``source``'s (shared, not copied)."""
        seq = self._free.pop()
        self._lib.llama_memory_seq_cp(self._mem, source, seq, -1, -1)
        return seq
