"""The effective sample size of a result's posterior: ``Result.ess``, the CLI's header and note,
the server's ``awrs`` field and ``/metrics``, and ``awrs eval`` records."""

from __future__ import annotations

import json

import pytest

import awrs.cli.commands
from awrs import Regex
from awrs.cli import format_result, main
from awrs.evaluation import Domain, Instance, read_records, run_eval
from awrs.result import Result, Sample
from awrs.smc.commitment import STREAMING_POLICY
from awrs.stats import Stats


def result_of(method: str, probabilities: list[float], valid: list[bool] | None = None) -> Result:
    valid = valid or [True] * len(probabilities)
    samples = [Sample(f"t{k}", p, 0.0, (k,), v) for k, (p, v) in enumerate(zip(probabilities, valid))]
    posterior = {s.text: s.probability for s in samples if s.valid}
    return Result(method, samples, posterior, 0.0, Stats(particles=4), [3], seed=0)


@pytest.mark.parametrize(("probabilities", "valid", "ess"), [
    ([0.25] * 4, None, 4.0),
    ([1.0], None, 1.0),
    ([1.0 - 3e-6, 1e-6, 1e-6, 1e-6], None, pytest.approx(1.0, abs=1e-5)),
    ([0.5, 0.25, 0.25], None, pytest.approx(1 / (0.25 + 2 * 0.0625))),
    # invalid samples are not in the posterior, so not in its ESS: the rest are renormalised
    ([0.5, 0.25, 0.25], [False, True, True], 2.0),
    ([], None, 0.0),
    ([0.5, 0.5], [False, False], 0.0),
])
def test_ess_of_the_posterior_samples(probabilities, valid, ess):
    result = result_of("awrs-smc", probabilities, valid)
    assert result.ess == ess
    assert result.to_json()["ess"] == ess


def test_equally_weighted_methods_have_their_sample_count_exactly():
    assert result_of("lcd", [0.2] * 5).ess == 5  # 1/sum(p^2) in floats is 4.999999999999999


def test_cli_header_shows_the_ess():
    assert "awrs-smc · 4 particles (ESS 4.00) · toy · seed 0" in format_result(result_of("awrs-smc", [0.25] * 4), "toy")


ONE_SAMPLE = "the posterior rests on one sample (ESS 1.00 of 4 particles)"


@pytest.mark.parametrize(("method", "probabilities", "warned"), [
    ("awrs-smc", [1.0 - 3e-6, 1e-6, 1e-6, 1e-6], True),
    ("masking-smc", [1.0], True),
    ("awrs-smc", [0.6, 0.4], False),   # ESS 1.92
    ("awrs-smc", [], False),           # no sample: the message says why
    ("lcd", [1.0], False),             # no weights: one sample is one sample, not a collapse
    ("rejection", [1.0], False),
])
def test_cli_notes_a_posterior_that_rests_on_one_sample(method, probabilities, warned):
    text = format_result(result_of(method, probabilities), "toy")
    assert (ONE_SAMPLE in text) == warned, text
    if warned:
        (line,) = [x for x in text.splitlines() if ONE_SAMPLE in x]
        assert line.startswith("note: ") and "--particles" in line and "--resample-power" in line


@pytest.mark.parametrize(("pattern", "warned"), [
    ("ab|c", True),   # seed 0 draws 'c' once (weight ~0.1) and 'ab' three times (~0.009 each)
    ("ab", False),    # every particle writes 'ab' with the same weight: ESS 4
])
def test_generate_prints_the_note_only_without_json(pattern, warned, trap_model, monkeypatch, capsys):
    monkeypatch.setattr(awrs.cli.commands, "load_model_from_args", lambda args: trap_model)
    argv = ["generate", "--prompt", "", "--regex", pattern, "--particles", "4", "--max-tokens", "4", "--seed", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert ("the posterior rests on one sample" in out) == warned, out
    assert main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    assert "rests on one sample" not in captured.out + captured.err
    record = json.loads(captured.out)
    assert len(record["samples"]) == 4  # the ESS is that of 4 weighted samples, not of a lone particle
    assert record["ess"] == (pytest.approx(1.06, abs=0.01) if warned else 4.0)


# -- server ----------------------------------------------------------------------------------


def test_server_answers_and_metrics_carry_the_ess():
    pytest.importorskip("fastapi")
    pytest.importorskip("prometheus_client")
    httpx = pytest.importorskip("httpx")
    from prometheus_client.parser import text_string_to_metric_families

    from awrs.server import create_app
    from awrs.server.testing import LiveServer, ToyChatModel

    body = {"prompt": "x", "guided_regex": "[ab]{2,5}", "particles": 3, "seed": 0, "max_tokens": 8}
    with LiveServer(create_app(ToyChatModel())) as live:
        first = httpx.post(live.url + "/v1/completions", json=body, timeout=30).json()["awrs"]
        assert 1.0 <= first["ess"] <= 3.0
        # a streamed request commits text as it goes; the same options give the same run
        plain = httpx.post(live.url + "/v1/completions", json=dict(body, **STREAMING_POLICY), timeout=30).json()["awrs"]
        with httpx.stream("POST", live.url + "/v1/completions", json=dict(body, stream=True), timeout=30) as reply:
            chunks = [json.loads(line[6:]) for line in reply.iter_lines() if line.startswith("data: {")]
        assert [c["awrs"]["ess"] for c in chunks if "awrs" in c] == [plain["ess"]]
        text = httpx.get(live.url + "/metrics", timeout=30).text
    samples = {(s.name, s.labels.get("le")): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("awrs_effective_sample_size_count", None)] == 3
    assert samples[("awrs_effective_sample_size_sum", None)] == pytest.approx(first["ess"] + 2 * plain["ess"])
    assert samples[("awrs_effective_sample_size_bucket", "0.0")] == 0
    assert samples[("awrs_effective_sample_size_bucket", "3.0")] == 3


# -- awrs eval -------------------------------------------------------------------------------


class OnePattern(Domain):
    name = "one-pattern"
    max_tokens = 4

    def instances(self, data_dir, *, seed):
        yield Instance("i0", prompt="")

    def constraint(self, instance):
        return Regex("ab|c")

    def score(self, instance, text):
        return {"score": float(text == "c")}


@pytest.mark.parametrize("method", ["awrs-smc", "lcd"])
def test_eval_records_carry_the_ess_of_their_outputs(method, trap_model, tmp_path):
    run_eval(trap_model, OnePattern(), tmp_path, method, out_path=tmp_path / "r.jsonl", particles=4,
             seed=0, progress=False)
    (record,) = read_records(tmp_path / "r.jsonl")
    weights = [o["weight"] for o in record["outputs"]]
    assert len(weights) == 4
    assert record["ess"] == pytest.approx(1 / sum(w * w for w in weights))
