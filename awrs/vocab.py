"""Vocabulary: token id <-> bytes, end-of-sequence ids and special tokens.

This is the one place where tokens become bytes. Constraints only ever see bytes, so a
constraint written once works with every tokenizer.

Not here: tokenization of prompts (that belongs to the model backends).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

# Special tokens that end a text in common model families. A token whose content is listed here
# counts as end-of-sequence even when the tokenizer names a different one as its `eos_token`
# (SmolLM2-Instruct ends chat turns with <|im_end|> but documents with <|endoftext|>).
KNOWN_END_TOKENS = frozenset(
    {
        "</s>",
        "<|endoftext|>",
        "<|im_end|>",
        "<|eot_id|>",
        "<|end_of_text|>",
        "<end_of_turn>",
        "<|end|>",
        "<eos>",
    }
)


MEMBERSHIP_CACHE = 16  # id arrays whose membership rows a vocabulary remembers


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """The bytes of every token id, which ids end a sequence, and which are special.

    Args:
        tokens: ``tokens[i]`` is the byte string token ``i`` stands for. Special tokens carry
            their literal content, but they are never emitted as text.
        eos_ids: ids that end a sequence (a model may have several).
        special_ids: ids that are control tokens (EOS ids included). Non-EOS special tokens are
            never proposed: samplers give them zero probability. Tokens with no bytes (other
            than EOS) are added here: they would write nothing, so every check of them would
            pass while the token tries and masks, built from bytes, cannot hold them.
        trie_cache: where :attr:`byte_trie` is stored once built and read back by the next
            process (a 262k vocabulary's trie takes ~0.1 s to build, ~7 ms to read).
    """

    tokens: tuple[bytes, ...]
    eos_ids: frozenset[int]
    special_ids: frozenset[int] = field(default_factory=frozenset)
    #: a folder where the byte trie is kept between processes, keyed by the vocabulary's bytes
    #: (model backends set it to the awrs cache; None builds it in every process)
    trie_cache: Path | None = None

    def __post_init__(self) -> None:
        if not self.eos_ids:
            raise ValueError("a vocabulary needs at least one end-of-sequence id")
        size = len(self.tokens)
        for i in self.eos_ids | self.special_ids:
            if not 0 <= i < size:
                raise ValueError(f"token id {i} is outside the vocabulary of {size} tokens")
        empty = np.flatnonzero(self._byte_layout.lengths == 0).tolist()
        object.__setattr__(self, "special_ids", frozenset(self.special_ids) | self.eos_ids | frozenset(empty))
        object.__setattr__(self, "_membership_cache", OrderedDict())
        object.__setattr__(self, "_membership_lock", threading.Lock())

    def __len__(self) -> int:
        return len(self.tokens)

    @cached_property
    def eos_array(self) -> np.ndarray:
        """Sorted EOS ids as an int64 array, for vectorised indexing."""
        return np.array(sorted(self.eos_ids), dtype=np.int64)

    @cached_property
    def blocked_array(self) -> np.ndarray:
        """Ids of special tokens that are not EOS: they never appear in generated text."""
        return np.array(sorted(self.special_ids - self.eos_ids), dtype=np.int64)

    @cached_property
    def _byte_layout(self) -> _ByteLayout:
        return _ByteLayout.of(self.tokens)

    @cached_property
    def generated_ids(self) -> np.ndarray:
        """Ids of the tokens that write text: every non-special token, ascending."""
        usable = np.ones(len(self.tokens), dtype=bool)
        usable[np.fromiter(self.special_ids, dtype=np.int64, count=len(self.special_ids))] = False
        return np.flatnonzero(usable)

    @cached_property
    def first_bytes(self) -> np.ndarray:
        """(V,) int16: each token's first byte; -1 for special and empty tokens."""
        out = np.full(len(self.tokens), -1, dtype=np.int16)
        ids = self.generated_ids
        layout = self._byte_layout
        out[ids] = layout.flat[layout.starts[ids]]
        return out

    @cached_property
    def max_token_bytes(self) -> int:
        """The most bytes one generated token can write (special tokens write none)."""
        lengths = self._byte_layout.lengths[self.generated_ids]
        return int(lengths.max()) if len(lengths) else 0

    @cached_property
    def byte_trie(self) -> ByteTrie:
        """The trie of the non-special tokens' bytes, level by level, for running automata."""
        if self.trie_cache is None:
            return ByteTrie.build(self)
        return ByteTrie.cached(self, self.trie_cache)

    @cached_property
    def fingerprint(self) -> str:
        """A digest of every token's bytes and which ids are special: equal for equal vocabularies."""
        layout = self._byte_layout
        digest = hashlib.sha256(b"awrs-vocabulary-1")
        for part in (layout.lengths, self.generated_ids.astype(np.int64), self.eos_array, layout.flat):
            digest.update(np.ascontiguousarray(part).tobytes())
        return digest.hexdigest()[:24]

    def tokens_starting_with(self, allowed: frozenset[int]) -> np.ndarray:
        """Ids of the non-special tokens whose first byte is in ``allowed``, ascending (cached
        per set, with their membership row: one pass over the first bytes, no sort)."""
        cache = self.__dict__.setdefault("_by_first_bytes", {})
        hit = cache.get(allowed)
        if hit is None:
            if len(cache) > 256:
                cache.clear()
            table = np.zeros(257, dtype=bool)  # entry 0: special and empty tokens (first byte -1)
            table[[b + 1 for b in allowed if 0 <= b < 256]] = True
            row = table[self.first_bytes.astype(np.intp) + 1]
            hit = cache[allowed] = np.flatnonzero(row)
            self._remember_membership(hit, row)
        return hit

    def membership(self, ids: np.ndarray) -> np.ndarray:
        """(V,) bool: which tokens are in ``ids``, remembered for the last few arrays passed.

        Checkers hand out the same cached id arrays step after step (a regex state's mask, a
        first-byte group), so filtering masses by a boolean row -- one multiplication -- beats
        gathering and scattering 100k ids per particle at 262k tokens. Arrays are remembered by
        identity (and held, so an id is never reused while remembered); they must not change.
        """
        with self._membership_lock:
            cache = self._membership_cache
            hit = cache.get(id(ids))
            if hit is not None and hit[0] is ids:
                cache.move_to_end(id(ids))
                return hit[1]
        keep = np.zeros(len(self.tokens), dtype=bool)
        keep[ids] = True
        self._remember_membership(ids, keep)
        return keep

    def _remember_membership(self, ids: np.ndarray, keep: np.ndarray) -> None:
        with self._membership_lock:
            cache = self._membership_cache
            cache[id(ids)] = (ids, keep)
            while len(cache) > MEMBERSHIP_CACHE:
                cache.popitem(last=False)

    def is_eos(self, token_id: int) -> bool:
        return token_id in self.eos_ids

    def decode(self, token_ids: Iterable[int]) -> bytes:
        """The bytes of a generated sequence; special tokens (EOS included) contribute nothing."""
        special = self.special_ids
        return b"".join(self.tokens[i] for i in token_ids if i not in special)

    def describe(self, token_id: int) -> str:
        """A readable name for one token, for messages and traces."""
        text = self.tokens[token_id].decode("utf-8", errors="backslashreplace")
        return f"{token_id}:{text!r}" + (" (special)" if token_id in self.special_ids else "")


@dataclass(frozen=True)
class ByteTrie:
    """The prefixes of a vocabulary's tokens, one array per depth.

    Node i of depth d (d >= 1) extends node ``parents[d-1][i]`` of depth d - 1 (depth 0 is the
    empty prefix, a single node) by byte ``bytes_[d-1][i]``. Token ``ends[d-1][1][k]`` is the
    prefix ``ends[d-1][0][k]`` of depth d. Running an automaton over the trie reads each shared
    prefix once: about 100k nodes for SmolLM2's 49k tokens of 332k bytes.
    """

    parents: tuple[np.ndarray, ...]
    bytes_: tuple[np.ndarray, ...]
    ends: tuple[tuple[np.ndarray, np.ndarray], ...]

    FORMAT = "v1"  # of the stored file (see cached)

    @classmethod
    def build(cls, vocab: Vocabulary) -> ByteTrie:
        """Depth by depth, as one MSD radix sort of the tokens: vectorised, about 0.1 s at 262k tokens.

        Tokens still longer than the depth are kept sorted by their prefix node; sorting them by
        (node, next byte) puts each child prefix in one run, and a run's start is a new node.
        """
        layout = vocab._byte_layout
        flat, starts, lengths = layout.flat, layout.starts, layout.lengths
        live = vocab.generated_ids.astype(np.int32)
        live = live[np.argsort(flat[starts[live]], kind="stable")]  # uint8 keys: a radix sort
        key = flat[starts[live]].astype(np.int32)
        parents: list[np.ndarray] = []
        bytes_: list[np.ndarray] = []
        ends: list[tuple[np.ndarray, np.ndarray]] = []
        depth = 0
        while len(live):
            depth += 1
            new = np.empty(len(key), dtype=bool)
            new[0] = True
            np.not_equal(key[1:], key[:-1], out=new[1:])
            first = key[new]
            parents.append((first >> 8).astype(np.int64))
            bytes_.append((first & 255).astype(np.int64))
            node = np.cumsum(new, dtype=np.int32) - 1
            ending = lengths[live] == depth
            ends.append((node[ending].astype(np.int64), live[ending].astype(np.int64)))
            live, node = live[~ending], node[~ending]
            if len(live):
                key = node * 256 + flat[starts[live] + depth]
                order = np.argsort(key, kind="stable")
                live, key = live[order], key[order]
        return cls(tuple(parents), tuple(bytes_), tuple(ends))


    @classmethod
    def cached(cls, vocab: Vocabulary, folder: Path) -> ByteTrie:
        """The trie stored in ``folder`` for this vocabulary, or built and stored there.

        A missing, unreadable or damaged file is rebuilt; a folder that cannot be written only
        means building again next time.
        """
        path = Path(folder) / f"byte-trie-{cls.FORMAT}-{vocab.fingerprint}.npz"
        try:
            with np.load(path, allow_pickle=False) as stored:
                return cls._unpack(stored["depths"], stored["nodes"], stored["ends"], stored["parents"],
                                   stored["bytes"], stored["end_nodes"], stored["end_ids"])
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
            pass  # not there yet, or damaged: build it again
        trie = cls.build(vocab)
        work = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(work, "wb") as handle:
                np.savez(handle, **trie._pack())
            os.replace(work, path)
        except OSError:
            with contextlib.suppress(OSError):
                work.unlink()
        return trie

    def _pack(self) -> dict[str, np.ndarray]:
        """The depths' arrays concatenated (a few large arrays read faster than 200 small ones)."""
        return {
            "depths": np.array([len(self.parents)], dtype=np.int64),
            "nodes": np.array([len(p) for p in self.parents], dtype=np.int64),
            "ends": np.array([len(e[0]) for e in self.ends], dtype=np.int64),
            "parents": np.concatenate(self.parents) if self.parents else np.zeros(0, np.int64),
            "bytes": np.concatenate(self.bytes_) if self.bytes_ else np.zeros(0, np.int64),
            "end_nodes": np.concatenate([e[0] for e in self.ends]) if self.ends else np.zeros(0, np.int64),
            "end_ids": np.concatenate([e[1] for e in self.ends]) if self.ends else np.zeros(0, np.int64),
        }

    @classmethod
    def _unpack(cls, depths, nodes, ends, parents, bytes_, end_nodes, end_ids) -> ByteTrie:
        depth = int(depths[0])
        if (len(nodes) != depth or len(ends) != depth or int(nodes.sum()) != len(parents)
                or len(parents) != len(bytes_) or int(ends.sum()) != len(end_nodes) or len(end_nodes) != len(end_ids)):
            raise ValueError("a damaged byte trie file")
        if depth == 0:
            return cls((), (), ())
        node_cuts, end_cuts = np.cumsum(nodes)[:-1], np.cumsum(ends)[:-1]
        return cls(
            tuple(np.split(parents.astype(np.int64, copy=False), node_cuts)),
            tuple(np.split(bytes_.astype(np.int64, copy=False), node_cuts)),
            tuple(zip(np.split(end_nodes.astype(np.int64, copy=False), end_cuts),
                      np.split(end_ids.astype(np.int64, copy=False), end_cuts))),
        )


@dataclass(frozen=True)
class _ByteLayout:
    """Every token's bytes in one array: token i is ``flat[starts[i] : starts[i] + lengths[i]]``."""

    flat: np.ndarray  # uint8
    starts: np.ndarray  # int32
    lengths: np.ndarray  # int32

    @classmethod
    def of(cls, tokens: Sequence[bytes]) -> _ByteLayout:
        lengths = np.fromiter(map(len, tokens), dtype=np.int32, count=len(tokens))
        starts = np.zeros(len(tokens), dtype=np.int32)
        np.cumsum(lengths[:-1], out=starts[1:])
        flat = np.frombuffer(b"".join(tokens), dtype=np.uint8)
        return cls(flat, starts, lengths)


# --- Building a Vocabulary from a Hugging Face tokenizer -------------------------------------


def _gpt2_byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's byte-to-printable-character table used by byte-level BPE."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _decoder_kinds(tokenizer_json: dict) -> set[str]:
    """The decoder component types of a `tokenizers` JSON (e.g. {'ByteLevel'} or {'ByteFallback', ...})."""
    kinds: set[str] = set()

    def walk(node: dict | None) -> None:
        if not node:
            return
        kinds.add(node.get("type", ""))
        for child in node.get("decoders", []) or []:
            walk(child)

    walk(tokenizer_json.get("decoder"))
    walk(tokenizer_json.get("pre_tokenizer"))
    for child in (tokenizer_json.get("pre_tokenizer") or {}).get("pretokenizers", []) or []:
        walk(child)
    return kinds


def token_bytes_from_hf(tokenizer) -> tuple[list[bytes], set[int]]:
    """Reconstruct the exact bytes of every token of a Hugging Face (fast) tokenizer.

    Handles byte-level BPE (GPT-2, Llama-3, SmolLM, Qwen: printable-character alphabet) and
    SentencePiece-style vocabularies (Llama-2, Mistral, Gemma: '▁' for space, '<0xNN>' byte
    fallback). Returns the byte strings and the ids of special (added, control) tokens.
    """
    import json

    size = len(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
    special: set[int] = set()
    added: dict[int, str] = {}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    kinds: set[str] = set()
    if backend is not None:
        spec = json.loads(backend.to_str())
        kinds = _decoder_kinds(spec)
        for entry in spec.get("added_tokens", []):
            added[entry["id"]] = entry["content"]
            if entry.get("special", False):
                special.add(entry["id"])
    for i in getattr(tokenizer, "all_special_ids", []) or []:
        if i is not None and 0 <= i < size:
            special.add(i)

    byte_level = "ByteLevel" in kinds
    byte_decoder = _gpt2_byte_decoder() if byte_level else {}
    out: list[bytes] = []
    for i, piece in enumerate(pieces):
        if piece is None:
            out.append(b"")
        elif i in added:
            out.append(added[i].encode("utf-8"))
        elif byte_level:
            try:
                out.append(bytes(byte_decoder[c] for c in piece))
            except KeyError:
                out.append(piece.encode("utf-8"))
        else:
            match = _BYTE_FALLBACK.match(piece)
            if match:
                out.append(bytes([int(match.group(1), 16)]))
            else:
                out.append(piece.replace("▁", " ").encode("utf-8"))
    return out, special


def vocabulary_from_hf(tokenizer, eos_ids: Sequence[int] = (), *, control_ids: Iterable[int] | None = None,
                       unused_ids: Iterable[int] = (), trie_cache: Path | None = None) -> Vocabulary:
    """Build a :class:`Vocabulary` from a Hugging Face tokenizer.

    Special tokens are the tokenizer's special (added, control) tokens, or, for a model read
    from a GGUF file, ``control_ids``: the tokens that file declares as control (its token
    types), as the llama.cpp backend reads them; the tokens it declares unused
    (``unused_ids``, Qwen's padding rows) write nothing, as on llama.cpp, so they are never
    proposed. EOS ids follow :func:`end_ids`, declared by the tokenizer's ``eos_token_id`` and
    the ids in ``eos_ids`` (for example a generation config's).
    """
    tokens, special = token_bytes_from_hf(tokenizer)
    if control_ids is not None:
        special = set(control_ids)
    for i in unused_ids:
        tokens[i] = b""
    declared = [*eos_ids, tokenizer.eos_token_id]
    ends = end_ids(tokens, special, declared)
    return Vocabulary(tuple(tokens), ends, frozenset(special), trie_cache=trie_cache)


def end_ids(tokens: Sequence[bytes], special: Iterable[int], declared: Iterable[int | None]) -> frozenset[int]:
    """The ids that end a sequence, by one rule on both backends: those the model declares (its
    EOS, end-of-turn token) and the special tokens whose text is a known end marker. A text token
    is never an end by its spelling: Qwen's "</s>" is an ordinary piece of text."""
    ends = {int(i) for i in declared if i is not None}
    ends |= {i for i in special if tokens[i].decode("utf-8", errors="replace") in KNOWN_END_TOKENS}
    return frozenset(ends)
