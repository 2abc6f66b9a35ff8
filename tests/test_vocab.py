"""Token bytes for byte-level BPE and SentencePiece-style tokenizers, EOS and special tokens."""

from __future__ import annotations

import numpy as np
import pytest

from awrs.vocab import Vocabulary, vocabulary_from_hf


def test_vocabulary_basics():
    vocab = Vocabulary((b"a", b"b", b"</s>", b"<pad>"), frozenset({2}), frozenset({3}))
    assert vocab.decode([0, 1, 2]) == b"ab"
    assert vocab.decode([3, 0]) == b"a"
    assert vocab.special_ids == {2, 3}
    assert list(vocab.blocked_array) == [3] and list(vocab.eos_array) == [2]
    with pytest.raises(ValueError):
        Vocabulary((b"a",), frozenset())
    with pytest.raises(ValueError):
        Vocabulary((b"a",), frozenset({5}))


def sentencepiece_tokenizer():
    """A Llama-2-style tokenizer built in memory: '▁' for spaces and <0xNN> byte fallback."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    from tokenizers import decoders, models

    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    pieces += ["▁", "▁the", "▁cat", "é", "ab", "▁▁", ".", "日本"]
    vocab = {p: i for i, p in enumerate(pieces)}
    tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens(["<s>", "</s>"])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def test_sentencepiece_style_bytes_match_the_tokenizer():
    tokenizer = sentencepiece_tokenizer()
    vocab = vocabulary_from_hf(tokenizer)
    assert vocab.tokens[vocab.tokens.index(b" the")] == b" the"
    assert vocab.tokens[3 + 0xE2] == b"\xe2"  # byte fallback piece
    assert 2 in vocab.eos_ids and 1 in vocab.special_ids
    # 'é' written as two byte-fallback pieces decodes to the character
    assert vocab.decode([3 + 0xC3, 3 + 0xA9]).decode() == "é"
    rng = np.random.default_rng(0)
    ascii_bytes = [3 + b for b in range(0x20, 0x7F)]
    pieces = [i for i in range(259, len(vocab))] + ascii_bytes
    for _ in range(200):
        ids = [int(i) for i in rng.choice(pieces, size=6)]
        assert vocab.decode(ids).decode("utf-8") == tokenizer.decode(ids)
