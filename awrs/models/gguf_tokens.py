"""What a GGUF file itself declares about its tokens: each token's type and the EOS ids.

llama.cpp's vocabulary loader rewrites token attributes by name (it makes any token spelt like
an end marker, "</s>" or "<|eot_id|>", a control token, whatever the file says), so the
backends decide which tokens are special from the file's own ``tokenizer.ggml.token_type``.
This reads the metadata only (the key/value section at the start of the file), without the
``gguf`` package, which the llama.cpp backend does not need otherwise.

Not here: deciding which tokens are special or EOS (see :mod:`awrs.vocab`).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError

#: ``tokenizer.ggml.token_type`` values (llama.cpp's ``llama_token_type``)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# GGUF value types: the struct format of each fixed-size one; 8 is a string, 9 an array
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_END_KEYS = ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")


@dataclass(frozen=True)
class DeclaredTokens:
    """A GGUF file's own word on its tokens.

    Attributes:
        types: ``types[i]`` is token ``i``'s ``tokenizer.ggml.token_type`` (``CONTROL`` = 3 ...);
            None when the file has no such array.
        end_ids: the ids the file names as end of sequence, turn or message (its
            ``eos_token_id``, ``eot_token_id`` and ``eom_token_id`` keys, those present).
    """

    types: np.ndarray | None
    end_ids: frozenset[int]

    def control_ids(self) -> frozenset[int] | None:
        """The ids the file declares as control tokens; None when it declares no types."""
        return None if self.types is None else frozenset(np.flatnonzero(self.types == CONTROL).tolist())

    def unused_ids(self) -> frozenset[int]:
        """The ids the file declares unused (padding rows of the output layer, for example)."""
        return frozenset() if self.types is None else frozenset(np.flatnonzero(self.types == UNUSED).tolist())


def declared_tokens(path: str | Path) -> DeclaredTokens:
    """Read the token types and end ids from ``path``'s metadata (a fraction of a second)."""
    path = Path(path)
    try:
        with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _Reader(data).declared()
    except (OSError, ValueError, struct.error, IndexError) as err:
        raise ModelError(f"could not read the token metadata of {path.name} ({err}); "
                         "is it a GGUF file?") from None


class _Reader:
    """A cursor over the GGUF header; only the key/value section is read."""

    def __init__(self, data: mmap.mmap) -> None:
        self.data, self.at = data, 0

    def _unpack(self, fmt: str):
        (value,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return value

    def _string(self) -> bytes:
        size = self._unpack("<Q")
        self.at += size
        return self.data[self.at - size:self.at]

    def declared(self) -> DeclaredTokens:
        if bytes(self.data[:4]) != b"GGUF":
            raise ValueError("no GGUF magic number")
        self.at = 4
        if self._unpack("<I") < 2:
            raise ValueError("GGUF version 1 is not supported")
        self._unpack("<Q")  # tensor count
        types, end_ids = None, set()
        for _ in range(self._unpack("<Q")):
            key = self._string().decode("utf-8", errors="replace")
            kind = self._unpack("<I")
            if key == "tokenizer.ggml.token_type" and kind == _ARRAY:
                types = self._array(keep=True)
            elif key in _END_KEYS and kind in _SCALARS:
                end_ids.add(int(self._unpack(_SCALARS[kind])))
            else:
                self._skip(kind)
        return DeclaredTokens(types, frozenset(end_ids))

    def _array(self, *, keep: bool) -> np.ndarray | None:
        kind, count = self._unpack("<I"), self._unpack("<Q")
        if kind in _SCALARS:
            width = struct.calcsize(_SCALARS[kind])
            start, self.at = self.at, self.at + width * count
            if keep:
                values = np.frombuffer(self.data[start:self.at], dtype=np.dtype(_SCALARS[kind]))
                return values.astype(np.int64)
            return None
        if keep:
            raise ValueError(f"token types stored as GGUF type {kind}, not numbers")
        for _ in range(count):
            self._skip(kind)
        return None

    def _skip(self, kind: int) -> None:
        if kind in _SCALARS:
            self.at += struct.calcsize(_SCALARS[kind])
        elif kind == _STRING:
            size = self._unpack("<Q")
            self.at += size
        elif kind == _ARRAY:
            self._array(keep=False)
        else:
            raise ValueError(f"unknown GGUF value type {kind}")
