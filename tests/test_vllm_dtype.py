"""``dtype`` reaches vLLM's engine: the embedded model in bfloat16 runs with bfloat16 weights
(its log-probabilities differ from float32's by rounding, and agree on the likeliest token).
In .venv-vllm (`make test-vllm`); elsewhere skipped. Its own engine: vLLM runs one per
process, so this file's model loads after the other vLLM test files' are closed."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip(
    "vllm", reason="vLLM is not installed here: `make setup-vllm` builds .venv-vllm, where `make test` runs this file")
torch = pytest.importorskip("torch")

import awrs  # noqa: E402

pytestmark = pytest.mark.model


def test_bfloat16_weights_run_and_round_the_log_probabilities():
    from test_real_posterior import reference

    tokenizer, float32_model, _, _ = reference()
    model = awrs.load_model(backend="vllm", dtype="bfloat16", threads=1, max_rows=4, max_model_len=256,
                            kv_cache_bytes=64 << 20, verbose=False)
    try:
        assert model.runs_as == "vllm, BF16"
        assert model._engine.vllm_config.model_config.dtype == torch.bfloat16
        prompt = model.encode("The capital of France is")
        session = model.open(prompt, 1)
        got = session.logprobs()[0]
        session.close()
    finally:
        model.close()
    with torch.no_grad():
        logits = float32_model(input_ids=torch.tensor([prompt])).logits[0, -1].double()
    expected = torch.log_softmax(logits, dim=-1).numpy()
    assert got.argmax() == expected.argmax()
    top = np.argsort(expected)[-20:]
    difference = np.abs(got[top] - expected[top]).max()
    assert 1e-3 < difference < 0.5  # rounded (not float32's 2e-4), but the same distribution's head
