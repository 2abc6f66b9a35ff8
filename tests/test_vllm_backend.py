"""The vLLM backend (awrs.models.vllm) on the embedded model, on vLLM's CPU build.

vLLM lives in its own environment (its pins clash with .venv): `make setup-vllm` builds
.venv-vllm and `make test` runs this file there (`make test-vllm`); elsewhere it is skipped.

What is checked: log-probabilities equal a fresh evaluation (transformers float32, and vLLM's
own fresh request) after forks at block-aligned and unaligned lengths, after EOS, and for rows
of different prompts; AWRS-SMC matches the exact posterior; a KV cache too small for every
particle and a failing or closed engine give clear errors; the CLI and the server run on it.
"""

from __future__ import annotations

import numpy as np
import pytest

vllm = pytest.importorskip(
    "vllm", reason="vLLM is not installed here: `make setup-vllm` builds .venv-vllm, where `make test` runs this file")
torch = pytest.importorskip("torch")

import awrs  # noqa: E402
from awrs.constraints import Regex  # noqa: E402
from awrs.errors import ModelError  # noqa: E402

pytestmark = pytest.mark.model
THREADS = 1  # the CI machine has 2 cores
TOLERANCE = 2e-4  # float32 log-probabilities of one model, computed in different batches


@pytest.fixture(scope="module")
def model():
    loaded = awrs.load_model(backend="vllm", verbose=False, threads=THREADS, max_rows=64,
                             kv_cache_bytes=256 << 20)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def transformers_model():
    """The reference: the same converted folder on plain transformers, float32."""
    from test_real_posterior import reference

    _, reference_model, _, _ = reference()
    return reference_model


def reference_logprobs(transformers_model, histories) -> np.ndarray:
    rows = []
    with torch.no_grad():
        for ids in histories:
            logits = transformers_model(input_ids=torch.tensor([ids])).logits[0, -1].double()
            rows.append(torch.log_softmax(logits, dim=-1).numpy())
    return np.stack(rows)


def fresh_logprobs(model, histories) -> np.ndarray:
    """Each history evaluated by a new session (a new vLLM request each)."""
    rows = []
    for ids in histories:
        session = model.open(ids, 1)
        rows.append(session.logprobs()[0])
        session.close()
    return np.stack(rows)


def prompt_of_length(model, length: int) -> list[int]:
    ids = model.encode("Once upon a time, in a village by the sea, there lived an old fisherman who " * 8)
    assert len(ids) >= length
    return ids[:length]


def test_first_logprobs_equal_transformers_float32(model, transformers_model):
    assert model.backend == "vllm" and model.weights == "F32" and model.runs_as == "vllm, F32"
    # OpenMP's thread count is per thread: the thread that steps vLLM runs with the count asked
    assert model._worker.submit(torch.get_num_threads).result() == THREADS
    prompt = model.encode("The capital of France is")
    session = model.open(prompt, 3)
    logprobs = session.logprobs()
    session.close()
    assert logprobs.shape == (3, len(model.vocab))
    np.testing.assert_array_equal(logprobs[0], logprobs[2])  # rows of one prompt share one request
    expected = reference_logprobs(transformers_model, [prompt])[0]
    assert np.abs(logprobs[0] - expected).max() < TOLERANCE


@pytest.mark.parametrize("length", [31, 32, 33, 45])
def test_after_forks_rows_equal_a_fresh_evaluation(model, transformers_model, length):
    """Resampling copies rows and drops others; copies that take different tokens become new
    vLLM requests served from the prefix cache, whose last block may be partly filled (31, 33
    and 45 tokens are not a multiple of the 32-token block) or full (32)."""
    prompt = prompt_of_length(model, length)
    session = model.open(prompt, 4)
    histories = [list(prompt)] * 4
    rng = np.random.default_rng(length)
    for parents in ([0, 0, 1, 1], [3, 3, 0, 2], [1, 1, 1, 1], [0, 2, 2, 3]):
        tokens = rng.integers(100, 20000, size=4)
        tokens[1] = tokens[0]  # two copies that draw the same token keep one request
        session.step(np.array(parents), tokens)
        histories = [histories[p] + [int(t)] for p, t in zip(parents, tokens)]
        logprobs = session.logprobs()
    assert session.evaluated < 4 * 4  # shared histories were evaluated once
    fresh = fresh_logprobs(model, histories)
    session.close()
    assert np.abs(logprobs - fresh).max() < TOLERANCE
    assert np.abs(logprobs - reference_logprobs(transformers_model, histories)).max() < TOLERANCE


def test_a_row_that_takes_eos_is_not_ended_by_vllm(model):
    """vLLM would finish a request at its EOS token; awrs decides when a row ends (the row after
    EOS is dropped by the sampler), so every row stays until awrs drops it."""
    eos = min(model.vocab.eos_ids)
    prompt = model.encode("Say nothing.")
    session = model.open(prompt, 2)
    session.logprobs()
    session.step(np.array([0, 1]), np.array([eos, 42]))
    logprobs = session.logprobs()
    assert logprobs.shape[0] == 2 and np.isfinite(logprobs).any(axis=1).all()
    session.step(np.array([1]), np.array([7]))  # the finished row is dropped
    assert session.logprobs().shape[0] == 1
    session.close()
    np.testing.assert_allclose(logprobs, fresh_logprobs(model, [prompt + [eos], prompt + [42]]), atol=TOLERANCE)


def test_rows_of_different_prompts_and_rows_joining_between_steps(model):
    first, second = model.encode("Hello there"), model.encode("A much longer prompt about the weather today")
    session = model.open_many([first, second], [2, 1])
    session.logprobs()
    session.step(np.array([0, 2]), np.array([11, 12]))
    session.extend(model.encode("Third"), 2)
    logprobs = session.logprobs()
    session.close()
    assert logprobs.shape[0] == 4
    expected = fresh_logprobs(model, [first + [11], second + [12], model.encode("Third")])
    np.testing.assert_allclose(logprobs[:3], expected, atol=TOLERANCE)
    np.testing.assert_array_equal(logprobs[2], logprobs[3])


@pytest.mark.parametrize("case", ["lcd-trap", "tokenizations", "utf-8"])
def test_awrs_smc_matches_the_exact_posterior(model, case):
    """The exactness cases of tests/test_real_posterior.py (16 seeds x 64 particles against the
    enumerated posterior: TV <= 0.03 + 3 SE, unbiased log-ML) on the vLLM backend."""
    from test_real_posterior import CASES, posterior_problems

    assert case in CASES
    assert posterior_problems(case, model=model) == []


def test_generate_runs_through_the_cli(model, capsys, monkeypatch):
    """`awrs generate --backend vllm` (one vLLM engine runs per process: the CLI gets this one)."""
    import awrs.models
    from awrs.cli import main

    asked = []
    monkeypatch.setattr(awrs.models, "load_model", lambda path, **kw: asked.append((path, kw)) or model)
    code = main(["generate", "--backend", "vllm", "--threads", "1", "--prompt", "The capital of France is",
                 "--regex", " (Paris|Lyon)\\.", "--particles", "4", "--max-tokens", "6", "--seed", "0"])
    out = capsys.readouterr().out
    assert code == 0 and "Paris." in out
    assert asked == [(None, {"backend": "vllm", "device": "cpu", "threads": 1})]


def test_a_second_engine_in_one_process_is_refused(model):
    with pytest.raises(ModelError, match="vLLM runs one per process: close it first"):
        awrs.load_model(backend="vllm", verbose=False)


def test_the_server_answers_a_constrained_chat_request(model):
    openai = pytest.importorskip("openai")
    from awrs.server import create_app
    from awrs.server.testing import LiveServer

    with LiveServer(create_app(model)) as live:
        client = openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        reply = client.chat.completions.create(
            model=model.name, messages=[{"role": "user", "content": "Is water wet? Answer yes or no."}],
            max_tokens=4, extra_body={"guided_choice": ["yes", "no"], "particles": 4, "seed": 0})
    assert reply.choices[0].message.content in ("yes", "no")


def test_sessions_that_take_turns_resume_exactly(model):
    """Every engine step runs all live requests, so while one session runs another is suspended
    (its requests aborted, its histories kept) and resumes from the prefix cache: here one is
    suspended after its log-probabilities were read (a step waiting for its tokens), the other
    between steps."""
    first, second = model.encode("One two three"), model.encode("Four five")
    a = model.open(first, 2)
    a.logprobs()
    b = model.open(second, 1)
    b.logprobs()
    a.step(np.array([0, 1]), np.array([5, 6]))
    after_a = a.logprobs()
    b.step(np.array([0, 0]), np.array([7, 8]))
    after_b = b.logprobs()
    a.step(np.array([1]), np.array([9]))
    again_a = a.logprobs()
    a.close()
    b.close()
    np.testing.assert_allclose(after_a, fresh_logprobs(model, [first + [5], first + [6]]), atol=TOLERANCE)
    np.testing.assert_allclose(after_b, fresh_logprobs(model, [second + [7], second + [8]]), atol=TOLERANCE)
    np.testing.assert_allclose(again_a, fresh_logprobs(model, [first + [6, 9]]), atol=TOLERANCE)
