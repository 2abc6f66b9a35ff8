"""The named model Qwen2.5-Coder 0.5B Instruct: a 151,936-token byte-level BPE vocabulary with a
chat template, run from Qwen's own Q4_K_M file, on both backends. Its exact-posterior check is
in test_real_posterior.py.

Its token 128247 is the text "</s>" (a NORMAL token in the file) that llama.cpp flags as control
by its spelling; it must be neither EOS nor special, on either backend.

Marked ``model``: ``make test`` installs the model's packages; the first load assembles the
file once (a few seconds) and the transformers backend converts it once (about a minute).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import named_model_on

import awrs
from awrs.cli import main
from awrs.constraints import Regex
from awrs.models.named import NAMED_MODELS

pytestmark = pytest.mark.model
QWEN = NAMED_MODELS["qwen2.5-coder-0.5b"]
PROMPT = "Write the closing tag of an HTML strikethrough element <s>."
END_TAG = 128247  # "</s>", an ordinary piece of text


@pytest.fixture(scope="module")
def cpp():
    return named_model_on("qwen2.5-coder-0.5b", "llamacpp")


@pytest.fixture(scope="module")
def hf():
    return named_model_on("qwen2.5-coder-0.5b", "hf")


def test_the_named_model_is_installed_and_verified():
    path = QWEN.gguf(verbose=False)
    assert path.is_file() and path.name == QWEN.file and path.stat().st_size == 491_400_064
    assert path.with_name(path.name + ".verified").read_text().split()[0] == QWEN.sha256


def test_both_backends_read_the_same_vocabulary(cpp, hf):
    assert len(cpp.vocab) == len(hf.vocab) == 151936
    assert cpp.vocab.tokens == hf.vocab.tokens
    assert cpp.vocab.eos_ids == hf.vocab.eos_ids == {151643, 151645}  # <|endoftext|>, <|im_end|>
    assert cpp.vocab.special_ids == hf.vocab.special_ids
    assert cpp.vocab.tokens[END_TAG] == b"</s>"
    for vocab in (cpp.vocab, hf.vocab):  # text: proposed, and it writes its bytes
        assert END_TAG not in vocab.special_ids and END_TAG in vocab.generated_ids
        assert vocab.decode([END_TAG, 151645]) == b"</s>"
    assert cpp.has_chat_template and hf.has_chat_template
    chat = [{"role": "user", "content": PROMPT}]
    assert cpp.apply_chat_template(chat) == hf.apply_chat_template(chat)


def test_both_backends_agree_on_the_next_token(cpp, hf):
    """Q4_K_M arithmetic in llama.cpp against its float32 dequantization in transformers."""
    ids = cpp.apply_chat_template([{"role": "user", "content": PROMPT}])
    for extra in ([], cpp.encode("The closing tag is")):
        rows = []
        for model in (cpp, hf):
            session = model.open(ids + extra, 1)
            rows.append(np.asarray(session.logprobs()[0], dtype=np.float64))
            session.close()
        p = np.exp(rows[1])
        assert float(np.sum(p * (rows[1] - rows[0]))) < 0.05


def test_generate_on_the_cli_reports_the_declared_ends(capsys):
    code = main(["generate", "--model", "qwen2.5-coder-0.5b", "--chat", "--prompt", "Is the sea salty?",
                 "--regex", r"(Yes|No), because [a-z ,]{3,40}\.", "--particles", "4", "--max-tokens", "16",
                 "--seed", "0", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "qwen2.5-coder-0.5b" and out["eos_token_ids"] == [151643, 151645]
    assert out["samples"] and all(Regex(r"(Yes|No), because [a-z ,]{3,40}\.").accepts(s["text"])
                                  for s in out["samples"] if s["valid"])
