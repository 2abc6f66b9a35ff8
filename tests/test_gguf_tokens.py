"""Which tokens are special or end a sequence, from what a GGUF file declares: its token types
read from the file, and the llama.cpp backend's rule on a vocabulary whose text token "</s>"
llama.cpp flags as control by its spelling (Qwen2.5's token 128247). The real file is checked
in test_qwen.py; these need no model."""

from __future__ import annotations

import ctypes

import pytest

from awrs.errors import ModelError
from awrs.models.gguf_tokens import CONTROL, NORMAL, UNUSED, USER_DEFINED, declared_tokens
from awrs.models.llamacpp import LlamaCppModel
from awrs.vocab import end_ids, vocabulary_from_hf

# a byte-level vocabulary in small: "</s>" is text here, as in Qwen2.5's, and the last is a padding row
TOKENS = ["a", "<|endoftext|>", "<|im_end|>", "</s>", "<tool_call>", "<|fim_pad|>", "[PAD6]"]
TYPES = [NORMAL, CONTROL, CONTROL, NORMAL, USER_DEFINED, CONTROL, UNUSED]


def write_gguf(path, types=TYPES, eos=2):
    """A GGUF file with only a tokenizer's metadata, written by the reference library."""
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(TOKENS)
    writer.add_token_merges(["a a"])  # a string array between the types and the EOS id, to skip
    if types is not None:
        writer.add_token_types(types)
    if eos is not None:
        writer.add_eos_token_id(eos)
    writer.add_array("general.tags", [1.5, 2.5])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_token_types_and_end_ids_are_read_from_the_file(tmp_path):
    declared = declared_tokens(write_gguf(tmp_path / "tiny.gguf"))
    assert declared.types.tolist() == TYPES
    assert declared.end_ids == {2} and declared.control_ids() == {1, 2, 5} and declared.unused_ids() == {6}
    bare = declared_tokens(write_gguf(tmp_path / "bare.gguf", types=None, eos=None))
    assert bare.types is None and bare.control_ids() is None and bare.end_ids == frozenset()
    assert bare.unused_ids() == frozenset()


def test_a_file_that_is_not_gguf_is_a_model_error(tmp_path):
    (tmp_path / "x.gguf").write_bytes(b"not a model at all")
    with pytest.raises(ModelError, match="could not read the token metadata of x.gguf"):
        declared_tokens(tmp_path / "x.gguf")


def test_text_spelt_like_an_end_marker_ends_nothing():
    tokens = [t.encode() for t in TOKENS]
    assert end_ids(tokens, special={1, 2, 5}, declared=[2, None]) == {1, 2}  # not 3, "</s>"
    assert end_ids(tokens, special={1, 2, 3, 5}, declared=[]) == {1, 2, 3}  # a control "</s>" ends


class FakeLlama:
    """The few llama.cpp calls that reading a vocabulary makes. Like llama.cpp, it flags tokens
    spelt like end markers as control, whatever the file says."""

    LLAMA_TOKEN_ATTR_NORMAL, LLAMA_TOKEN_ATTR_CONTROL, LLAMA_TOKEN_ATTR_USER_DEFINED = 4, 8, 16

    def llama_token_to_piece(self, vocab, token, buf, size, lstrip, special):
        piece = b"" if TYPES[token] == UNUSED else TOKENS[token].encode()  # llama.cpp writes none
        ctypes.memmove(buf, piece, len(piece))
        return len(piece)

    def llama_vocab_get_attr(self, vocab, token):
        if TOKENS[token] in ("<|endoftext|>", "<|im_end|>", "</s>", "<|fim_pad|>"):
            return self.LLAMA_TOKEN_ATTR_CONTROL
        return self.LLAMA_TOKEN_ATTR_USER_DEFINED if TYPES[token] == USER_DEFINED else self.LLAMA_TOKEN_ATTR_NORMAL

    def llama_vocab_eos(self, vocab):
        return 2

    def llama_vocab_eot(self, vocab):
        return 3  # llama.cpp's guess by name may be a text token too


def vocabulary_read_by_llamacpp(path):
    model = object.__new__(LlamaCppModel)  # the vocabulary alone: no library, no weights
    model._lib, model._vocab_p, model._n_vocab, model.path = FakeLlama(), None, len(TOKENS), path
    return model._read_vocabulary()


def test_llamacpp_special_and_eos_tokens_are_those_the_file_declares(tmp_path, monkeypatch):
    monkeypatch.setenv("AWRS_CACHE_DIR", str(tmp_path / "cache"))
    vocab = vocabulary_read_by_llamacpp(write_gguf(tmp_path / "tiny.gguf"))
    assert vocab.eos_ids == {1, 2}
    assert vocab.special_ids == {1, 2, 5, 6}
    assert 3 in vocab.generated_ids.tolist() and vocab.decode([0, 3, 4]) == b"a</s><tool_call>"
    # a file without token types: llama.cpp's flags and EOS ids are all there is
    vocab = vocabulary_read_by_llamacpp(write_gguf(tmp_path / "bare.gguf", types=None, eos=None))
    assert vocab.special_ids == {1, 2, 3, 5, 6} and vocab.eos_ids == {1, 2, 3}


def byte_level_tokenizer():
    """TOKENS as a byte-level BPE tokenizer converted from a GGUF file might come out: fewer
    special tokens than the file declares, and the padding row as text."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    from tokenizers import decoders, models, pre_tokenizers

    tok = tokenizers.Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(TOKENS)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>", "<|im_end|>"])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>")


def test_the_transformers_backend_reads_the_same_declarations(tmp_path, monkeypatch):
    monkeypatch.setenv("AWRS_CACHE_DIR", str(tmp_path / "cache"))
    tokenizer = byte_level_tokenizer()
    assert vocabulary_from_hf(tokenizer).tokens[6] == b"[PAD6]"  # text, by the tokenizer alone
    declared = declared_tokens(write_gguf(tmp_path / "tiny.gguf"))
    hf = vocabulary_from_hf(tokenizer, control_ids=declared.control_ids(), unused_ids=declared.unused_ids())
    cpp = vocabulary_read_by_llamacpp(tmp_path / "tiny.gguf")
    assert hf.tokens == cpp.tokens and hf.eos_ids == cpp.eos_ids == {1, 2}
    assert hf.special_ids == cpp.special_ids == {1, 2, 5, 6}
