"""The vLLM backend at its limits: a KV cache too small for every particle, an engine that fails,
a closed model. On a model of its own with a small KV cache (vLLM runs one engine per process,
so this file's model is loaded after tests/test_vllm_backend.py's is closed)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip(
    "vllm", reason="vLLM is not installed here: `make setup-vllm` builds .venv-vllm, where `make test` runs this file")

import awrs  # noqa: E402
from awrs.errors import ModelError  # noqa: E402

pytestmark = pytest.mark.model
BLOCK = 32  # tokens per KV block on a CPU
BLOCK_BYTES = BLOCK * 30 * 2 * 3 * 64 * 4  # SmolLM2-135M: 30 layers, keys and values, 3 heads of 64, float32


@pytest.fixture(scope="module")
def small_model():
    """A KV cache of 12 blocks, a context of 256 tokens (8 blocks: vLLM needs one such row to fit)."""
    loaded = awrs.load_model(backend="vllm", verbose=False, threads=1, max_rows=16, max_model_len=256,
                             kv_cache_bytes=12 * BLOCK_BYTES)
    yield loaded
    loaded.close()


def test_a_kv_cache_too_small_for_every_particle_is_a_clear_error(small_model):
    """14 rows that part after a 40-token prompt share its first block and need one more each:
    15 blocks, and the cache holds 12, so vLLM leaves rows out of a step (preempted or never
    scheduled): awrs says why and how to fix it, instead of handing out the log-probabilities
    of the rows that ran."""
    assert small_model.max_cells == 12 * BLOCK  # what a server admits requests within
    prompt = small_model.encode("Once upon a time, in a village by the sea, there lived an old fisherman " * 4)[:40]
    session = small_model.open(prompt, 14)
    session.logprobs()
    with pytest.raises(ModelError, match="KV cache") as caught:
        for step in range(3):
            session.step(np.arange(14), np.arange(1000, 1014) + 14 * step)
            session.logprobs()
    assert "kv_cache_bytes" in str(caught.value)
    # that session is over, but the model goes on: a session that fits runs
    fits = small_model.open(prompt, 2)
    fits.step(np.array([0, 1]), np.array([5, 6]))
    assert fits.logprobs().shape[0] == 2
    fits.close()


def test_a_failing_engine_is_a_clear_error_then_a_closed_model_says_so(small_model, monkeypatch):
    session = small_model.open(small_model.encode("Hello"), 2)

    def broken_step():
        raise RuntimeError("EngineCore died")

    monkeypatch.setattr(small_model._engine, "step", broken_step)
    with pytest.raises(ModelError, match="engine step raised RuntimeError: EngineCore died"):
        session.logprobs()
    with pytest.raises(ModelError, match="load the model again"):
        small_model.open(small_model.encode("Hello"), 1)
    monkeypatch.undo()
    small_model.close()
    with pytest.raises(ModelError, match="was closed"):
        small_model.open([1, 2, 3], 1)
