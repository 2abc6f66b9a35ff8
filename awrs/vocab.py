"""Vocabulary: token id <-> bytes, end-of-sequence ids and special tokens.

This is the one place where tokens become bytes. Constraints only ever see bytes, so a
constraint written once works with every tokenizer.

Not here: tokenization of prompts (that belongs to the model backends).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

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
    """

    tokens: tuple[bytes, ...]
    eos_ids: frozenset[int]
    special_ids: frozenset[int] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not self.eos_ids:
            raise ValueError("a vocabulary needs at least one end-of-sequence id")
        size = len(self.tokens)
        for i in self.eos_ids | self.special_ids:
            if not 0 <= i < size:
                raise ValueError(f"token id {i} is outside the vocabulary of {size} tokens")
        empty = np.flatnonzero(self._byte_layout.lengths == 0).tolist()
        object.__setattr__(self, "special_ids", frozenset(self.special_ids) | self.eos_ids | frozenset(empty))

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
        return ByteTrie.build(self)

    @cached_property
    def _first_byte_groups(self) -> list[np.ndarray]:
        """Token ids grouped by first byte: ``groups[b]`` (one sort of the vocabulary, once)."""
        order = np.argsort(self.first_bytes, kind="stable")
        bounds = np.searchsorted(self.first_bytes[order], np.arange(257))
        return [order[bounds[b] : bounds[b + 1]] for b in range(256)]

    def tokens_starting_with(self, allowed: frozenset[int]) -> np.ndarray:
        """Ids of the non-special tokens whose first byte is in ``allowed`` (cached per set)."""
        cache = self.__dict__.setdefault("_by_first_bytes", {})
        if allowed not in cache:
            if len(cache) > 256:
                cache.clear()
            groups = self._first_byte_groups
            parts = [groups[b] for b in sorted(allowed) if 0 <= b < 256]
            cache[allowed] = np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
        return cache[allowed]

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


def vocabulary_from_hf(tokenizer, eos_ids: Sequence[int] = ()) -> Vocabulary:
    """Build a :class:`Vocabulary` from a Hugging Face tokenizer.

    EOS ids are the tokenizer's ``eos_token_id``, the ids in ``eos_ids`` (for example a
    generation config's), and special tokens whose content is a known end marker.
    """
    tokens, special = token_bytes_from_hf(tokenizer)
    eos = {int(i) for i in eos_ids if i is not None}
    if tokenizer.eos_token_id is not None:
        eos.add(int(tokenizer.eos_token_id))
    for i in special:
        if tokens[i].decode("utf-8", errors="replace") in KNOWN_END_TOKENS:
            eos.add(i)
    return Vocabulary(tuple(tokens), frozenset(eos), frozenset(special))
