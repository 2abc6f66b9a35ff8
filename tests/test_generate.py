"""awrs.generate: every method, the Result contract, and bad input, on tiny models."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from conftest import hashed_model

import awrs
from awrs.errors import ConfigError


@pytest.mark.parametrize("method", list(awrs.METHODS))
def test_every_method_runs_and_reports(method):
    model = hashed_model(seed=9)
    constraint = awrs.Regex(r"(a|b)+c?")
    result = awrs.generate(model, [], constraint, particles=8, max_tokens=4, method=method, seed=0)
    assert result.method == method
    assert result.stats.tokens > 0 and result.stats.total_seconds > 0
    assert sum(s.probability for s in result.samples) == pytest.approx(1.0)
    for sample in result.samples:
        assert sample.valid == constraint.accepts(sample.text)
        if method != "unconstrained":
            assert sample.valid
    if result.posterior:
        assert sum(result.posterior.values()) == pytest.approx(1.0)
        assert all(constraint.accepts(text) for text in result.posterior)
    if method in ("awrs-smc", "masking-smc", "rejection"):
        assert result.log_marginal_likelihood is not None
    else:
        assert result.log_marginal_likelihood is None
    if method in ("awrs-smc", "lcd"):
        assert result.stats.checks_per_token < len(model.vocab)
    if method in ("masking", "masking-smc"):
        assert result.stats.checks_per_token >= len(model.vocab)
    if method == "unconstrained":
        assert result.stats.constraint_checks == 0


def test_result_json_contract():
    model = hashed_model(seed=10)
    result = awrs.generate(model, [], awrs.Regex(r"[ab]+"), particles=6, max_tokens=3, seed=1)
    data = json.loads(json.dumps(result.to_json()))
    for key in ("samples", "posterior", "log_marginal_likelihood", "eos_token_ids", "stats"):
        assert key in data
    assert data["eos_token_ids"] == [3]
    assert all(set(s) >= {"text", "probability"} for s in data["samples"])
    for key in ("tokens", "model_calls", "constraint_checks", "rejections", "model_seconds",
                "constraint_seconds", "sampler_seconds"):
        assert key in data["stats"]


def test_json_has_no_infinities_when_everything_dies():
    result = awrs.generate(hashed_model(seed=11), [], awrs.Regex("z"), particles=3, max_tokens=3, seed=0)
    text = json.dumps(result.to_json(), allow_nan=False)
    assert json.loads(text)["log_marginal_likelihood"] is None
    assert result.log_marginal_likelihood == -math.inf


def test_prompt_forms():
    model = awrs.TableModel(["a", "b", "<eos>"], lambda c: [0.4, 0.4, 0.2], eos=2)
    for prompt in ("ab", [0, 1]):
        result = awrs.generate(model, prompt, awrs.Regex("a+"), particles=4, max_tokens=3, seed=0)
        assert all(text.strip("a") == "" for text in result.posterior)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        awrs.generate(model, [7], awrs.Regex("a"), particles=2, max_tokens=2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "beam"}, "unknown method"),
        ({"particles": 0}, "particles"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"ess_threshold": 2.0}, "ess_threshold"),
        ({"resampling": "stratified-ish"}, "resampling"),
        ({"estimator": "three-loop"}, "estimator"),
        ({"method": "lcd", "critic": lambda t, f: 0.0}, "critic"),
    ],
)
def test_bad_options_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        awrs.generate(hashed_model(), [], awrs.Regex("a"), **kwargs)


def test_constraint_type_is_checked():
    with pytest.raises(ConfigError, match="Constraint"):
        awrs.generate(hashed_model(), [], "a+")


def test_import_does_not_load_torch():
    code = "import sys, awrs; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_names_exist():
    for name in awrs.__all__:
        assert hasattr(awrs, name), name


def test_generate_many_batches_requests_and_keeps_them_separate():
    model = hashed_model(seed=15)
    requests = [
        {"prompt": [0], "constraint": awrs.Regex(r"[ab]+"), "particles": 5, "max_tokens": 3, "seed": 1},
        {"prompt": [1], "constraint": awrs.Regex(r"c+"), "particles": 3, "max_tokens": 3, "seed": 2,
         "method": "lcd"},
        {"prompt": [2], "constraint": awrs.Regex(r"[abc]"), "particles": 2, "max_tokens": 2,
         "method": "rejection", "seed": 3},
    ]
    calls_before = model.calls
    results = awrs.generate_many(model, requests)
    assert [r.method for r in results] == ["awrs-smc", "lcd", "rejection"]
    assert all(set(t) <= {"a", "b"} for t in results[0].posterior)
    assert all(set(t) == {"c"} for t in results[1].posterior)
    assert results[0].stats.particles == 5 and results[1].stats.particles == 3
    smc_steps = max(results[0].stats.steps, results[1].stats.steps)
    assert model.calls - calls_before >= smc_steps  # shared calls, plus the rejection rounds
    alone = awrs.generate(model, [0], awrs.Regex(r"[ab]+"), particles=5, max_tokens=3, seed=1)
    assert alone.posterior == results[0].posterior  # batching does not change the draws


def test_generate_many_reports_bad_requests():
    with pytest.raises(ConfigError, match="request 0 has no 'constraint'"):
        awrs.generate_many(hashed_model(), [{"prompt": [0]}])
    with pytest.raises(ConfigError, match="request 0"):
        awrs.generate_many(hashed_model(), [{"prompt": [0], "constraint": awrs.Regex("a"), "colour": 1}])


def test_should_stop_ends_a_run_cleanly_and_keeps_finished_samples():
    model = awrs.TableModel(["a", "<eos>"], lambda c: [0.7, 0.3], eos=1)
    steps = iter(range(100))
    result = awrs.generate(
        model, [], awrs.Regex("a*"), particles=50, max_tokens=30, seed=0,
        should_stop=lambda: "client went away" if next(steps) >= 3 else None,
    )
    assert result.message.startswith("stopped early: client went away")
    assert result.stats.stopped_particles > 0 and result.stats.steps == 3
    assert result.samples and all(len(s.text) <= 2 for s in result.samples)
    with pytest.raises(ConfigError, match="time_limit"):
        awrs.generate(model, [], awrs.Regex("a*"), time_limit=0)


def test_unconstrained_texts_cut_at_the_token_limit_are_not_valid():
    """With EOS forced at the limit, 'aaa' is not a text the model ended: it must not count."""
    model = awrs.TableModel([b"a", b"<eos>"], lambda context: [0.9, 0.1], eos=1)
    result = awrs.generate(model, [], awrs.Regex("a+"), method="unconstrained", particles=64, max_tokens=3, seed=0)
    cut = [s for s in result.samples if s.text == "aaa"]
    assert cut and not any(s.valid for s in cut)
    assert all(s.valid for s in result.samples if s.text in ("a", "aa"))
