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


def test_empty_tokens_are_never_proposed():
    """A token with no bytes passes every check but has no place in tries and masks, so it is
    blocked like a control token: masks and checks then weigh the same tokens, and the weights
    estimate P(constraint) over texts written without it (as the exact enumeration counts)."""
    import awrs
    from awrs.constraints import Regex
    from awrs.models.table import TableModel
    from awrs.testing import exact_target

    vocab = Vocabulary((b"a", b"", b"<eos>"), frozenset({2}))
    assert vocab.special_ids == {1, 2} and list(vocab.blocked_array) == [1]
    assert vocab.first_bytes.tolist() == [ord("a"), -1, -1]
    assert Vocabulary((b"",), frozenset({0})).special_ids == {0}  # an empty EOS stays EOS

    model = TableModel(["a", "", "<eos>"], lambda context: [0.3, 0.4, 0.3], eos=2)
    constraint = Regex("a")
    truth = sum(exact_target(model, [], constraint, max_tokens=4).values())
    assert truth == pytest.approx(0.3 * 0.3)  # 'a' then EOS; paths through '' are not texts
    for masks in ("always", "never"):
        runs = [
            awrs.generate(model, [], constraint, particles=8, max_tokens=4, masks=masks, seed=seed)
            for seed in range(20)
        ]
        assert all(r.samples and {s.text for s in r.samples} == {"a"} for r in runs), masks
        mean = np.mean([np.exp(r.log_marginal_likelihood) for r in runs])
        assert mean == pytest.approx(truth, rel=0.05), masks


def random_vocabulary(seed: int, size: int = 3000) -> Vocabulary:
    """Random byte strings sharing prefixes (as real vocabularies do), some special and empty."""
    rng = np.random.default_rng(seed)
    alphabet = np.frombuffer(b"ab \xc3\xa9\x00\xff", dtype=np.uint8)
    tokens = {bytes([b]) for b in range(256)}
    while len(tokens) < size:
        tokens.add(bytes(rng.choice(alphabet, size=int(rng.integers(1, 12)))))
    ordered = sorted(tokens)
    rng.shuffle(ordered)
    ordered += [b"", b"<eos>", b"<ctl>"]
    n = len(ordered)
    return Vocabulary(tuple(ordered), frozenset({n - 2}), frozenset({n - 1, 5}))


def spell(trie, depth: int, node: int) -> bytes:
    out = []
    for d in range(depth, -1, -1):
        out.append(int(trie.bytes_[d][node]))
        node = int(trie.parents[d][node])
    return bytes(reversed(out))


@pytest.mark.parametrize("seed", [0, 1])
def test_the_byte_trie_spells_every_generated_token_once(seed):
    vocab = random_vocabulary(seed)
    trie = vocab.byte_trie
    seen = {}
    for depth, (nodes, ids) in enumerate(trie.ends):
        for node, token in zip(nodes.tolist(), ids.tolist()):
            seen[token] = spell(trie, depth, node)
    generated = [i for i, t in enumerate(vocab.tokens) if i not in vocab.special_ids]
    assert sorted(seen) == generated  # special, EOS and empty tokens are not in it
    assert all(seen[i] == vocab.tokens[i] for i in generated)
    for depth in range(len(trie.parents)):  # one node per distinct prefix
        prefixes = {t[: depth + 1] for i, t in enumerate(vocab.tokens) if i in generated and len(t) > depth}
        assert len(trie.parents[depth]) == len(prefixes)
    assert vocab.max_token_bytes == max(len(vocab.tokens[i]) for i in generated)
    assert vocab.first_bytes.tolist() == [t[0] if i in generated else -1 for i, t in enumerate(vocab.tokens)]


def test_the_byte_trie_is_read_back_from_disk_and_rebuilt_when_damaged(tmp_path):
    from dataclasses import replace

    built = random_vocabulary(0).byte_trie
    vocab = replace(random_vocabulary(0), trie_cache=tmp_path)
    first = vocab.byte_trie
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].name.startswith("byte-trie-")
    again = replace(vocab).byte_trie  # a new process: read from the file
    for trie in (first, again):
        assert all((a == b).all() for a, b in zip(trie.parents, built.parents))
        assert all((a[1] == b[1]).all() and (a[0] == b[0]).all() for a, b in zip(trie.ends, built.ends))
    other = replace(random_vocabulary(1), trie_cache=tmp_path)
    assert other.fingerprint != vocab.fingerprint
    other.byte_trie  # noqa: B018 -- another vocabulary, another file
    assert len(list(tmp_path.iterdir())) == 2
    data = bytearray(files[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    files[0].write_bytes(bytes(data))  # damaged: rebuilt, and the file replaced
    rebuilt = replace(vocab).byte_trie
    assert all((a == b).all() for a, b in zip(rebuilt.bytes_, built.bytes_))
    assert replace(vocab).byte_trie is not None and files[0].read_bytes() != bytes(data)


def test_an_unwritable_trie_cache_only_means_building_again(tmp_path):
    from dataclasses import replace

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    vocab = replace(random_vocabulary(0), trie_cache=blocker / "vocab")
    assert len(vocab.byte_trie.parents) == len(random_vocabulary(0).byte_trie.parents)


def test_membership_rows_are_remembered_by_array():
    vocab = random_vocabulary(0)
    ids = np.array([3, 7, 11])
    row = vocab.membership(ids)
    assert row.dtype == bool and np.flatnonzero(row).tolist() == [3, 7, 11]
    assert vocab.membership(ids) is row
    assert vocab.membership(np.array([3, 7, 11])) is not row  # another array: not assumed equal
