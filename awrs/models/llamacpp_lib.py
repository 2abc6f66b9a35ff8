"""The llama.cpp library as awrs uses it: the low-level binding loaded once, its log kept for
error messages, and how a limit error says which setting to raise. Shared by the model
(``llamacpp.py``), its sequence pool and its sessions."""

from __future__ import annotations

import ctypes
import threading
from collections import deque
from collections.abc import Sequence

from ..errors import ModelError

_lib = None
_lib_lock = threading.Lock()


class _Log:
    """llama.cpp's log lines, kept (not printed) so that errors can quote them."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque(maxlen=40)
        self.echo = False
        self._partial = ""

    def add(self, level: int, text: bytes | None) -> None:
        message = (text or b"").decode("utf-8", errors="replace")
        if self.echo:
            import sys

            print(message, end="", file=sys.stderr, flush=True)
        self._partial += message
        if "\n" in self._partial:
            *done, self._partial = self._partial.split("\n")
            self.lines.extend(line for line in done if line.strip())

    def mark(self) -> None:
        """Forget earlier lines: the next error quotes only what follows."""
        self.lines.clear()

    def recent(self, words: Sequence[str] = ("error", "fail", "invalid", "unknown", "not ")) -> str:
        picked = [line.strip() for line in self.lines if any(w in line.lower() for w in words)]
        return "; ".join(picked[-3:])


LOG = _Log()
_log_callback = None  # keeps the ctypes callback alive


def llama():
    """The low-level ``llama_cpp`` module, initialised once, its logging captured."""
    global _lib, _log_callback
    if _lib is not None:
        return _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        # llama.cpp's CPU threads are an OpenMP team that meets at a barrier after every graph
        # node, so how idle threads wait decides the speed: libgomp's default (spin briefly,
        # then sleep) measured 45 ms per 10-row step on an idle 2-core machine, against 82 ms
        # with OMP_WAIT_POLICY=PASSIVE (and 8 against 25 ms for one row). On a machine whose
        # cores are all busy with other work, PASSIVE is the better choice; libgomp reads the
        # variable once, when it is first loaded, so a user who wants it sets it before start.
        try:
            import llama_cpp
        except ImportError as err:  # not installed, or its shared library failed to load
            raise ModelError(
                f"the llamacpp backend needs llama-cpp-python ({err}): "
                "run `pip install llama-cpp-python` (it compiles llama.cpp, about 10 minutes)"
            ) from err
        lib = llama_cpp.llama_cpp
        _log_callback = lib.llama_log_callback(lambda level, text, _data: LOG.add(level, text))
        lib.llama_log_set(_log_callback, ctypes.c_void_p(0))
        lib.llama_backend_init()
        _lib = lib
        return lib


def limit_hint(name: str) -> str:
    flag = {"n_ctx": " (CLI: --n-ctx)"}.get(name, "")
    return f"pass a larger {name}{flag}, e.g. load_model(..., backend='llamacpp', {name}=...)"
