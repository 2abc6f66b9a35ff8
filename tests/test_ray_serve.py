"""``awrs serve --ray``: two replicas of the app behind Ray Serve's proxy, on a local cluster
started once for the module (Ray and the replicas take seconds to start). Each replica runs
the embedded model on one thread."""

from __future__ import annotations

import functools
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

ray = pytest.importorskip("ray", reason='Ray is not installed: pip install -e ".[ray]"')
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from awrs.models import load_model  # noqa: E402
from awrs.server.replicated import REPLICA_HEADER, merged_exposition  # noqa: E402

pytestmark = pytest.mark.model
KEY = "replicated-secret"
HEADERS = {"Authorization": f"Bearer {KEY}"}
REQUEST = {"prompt": "Name a colour:", "max_tokens": 8, "seed": 7, "guided_regex": " [a-z]+", "particles": 3}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url():
    from ray import serve

    from awrs.server.replicated import serve_on_ray

    port = _free_port()
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    serve_on_ray(functools.partial(load_model, backend="llamacpp", n_threads=1, verbose=False), address=None,
                 host="127.0.0.1", port=port, replicas=2, cpus_per_replica=1, blocking=False,
                 limits={"max_tokens": 64}, api_key=KEY)
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


def _complete(url, body=REQUEST, timeout=120):
    return httpx.post(f"{url}/v1/completions", json=body, headers=HEADERS, timeout=timeout)


def _replicas(url, body=REQUEST, tries=40) -> dict[str, dict]:
    """The answer of each replica to ``body`` (sent until both have answered)."""
    answers: dict[str, dict] = {}
    for _ in range(tries):
        response = _complete(url, body)
        assert response.status_code == 200, response.text
        answers.setdefault(response.headers[REPLICA_HEADER], response.json())
        if len(answers) == 2:
            break
    return answers


def test_concurrent_requests_are_spread_over_both_replicas(url):
    bodies = [{**REQUEST, "seed": k} for k in range(20)]
    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda body: _complete(url, body), bodies))
    assert [r.status_code for r in responses] == [200] * 20
    assert len({r.headers[REPLICA_HEADER] for r in responses}) == 2
    for response in responses:
        text = response.json()["choices"][0]["text"]
        assert text[:1] == " " and text[1:].isalpha() and text[1:].islower()


def test_the_same_request_and_seed_get_the_same_answer_from_either_replica(url):
    answers = _replicas(url)
    assert len(answers) == 2
    first, second = ([c["text"] for c in a["choices"]] for a in answers.values())
    assert first == second


def test_keys_limits_and_streaming_work_as_in_one_process(url):
    assert httpx.post(f"{url}/v1/completions", json=REQUEST, timeout=60).status_code == 401
    too_long = _complete(url, {**REQUEST, "max_tokens": 1000})
    assert too_long.status_code == 400 and "max_tokens" in too_long.text
    with httpx.stream("POST", f"{url}/v1/completions", json={**REQUEST, "stream": True}, headers=HEADERS,
                      timeout=120) as stream:
        assert stream.status_code == 200
        events = [line[6:] for line in stream.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert "".join(json.loads(e)["choices"][0].get("text", "") for e in events[:-1]).startswith(" ")


def test_metrics_gather_every_replica_labelled(url):
    _replicas(url)
    text = httpx.get(f"{url}/metrics", headers=HEADERS, timeout=60).text
    ok = [line for line in text.splitlines() if line.startswith('awrs_requests_total{outcome="ok"')]
    assert len(ok) == 2 and all('replica="' in line for line in ok)
    assert sum(float(line.split()[-1]) for line in ok) >= 2
    assert text.count("# TYPE awrs_requests_total counter") == 1  # one family, not one per replica


def test_merged_exposition_keeps_one_family_per_metric():
    text = ('# HELP awrs_x_total X\n# TYPE awrs_x_total counter\nawrs_x_total{outcome="ok"} 2.0\n')
    merged = merged_exposition({"a": text, "b": text.replace("2.0", "5.0")}).decode()
    assert merged.count("# TYPE awrs_x_total counter") == 1
    assert 'awrs_x_total{outcome="ok",replica="a"} 2.0' in merged
    assert 'awrs_x_total{outcome="ok",replica="b"} 5.0' in merged


def test_a_replica_killed_under_load_fails_only_its_requests_and_comes_back(url):
    from ray import serve

    before = set(_replicas(url))
    victim_name = next(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                       if "SERVE_REPLICA" in a["name"] and a["namespace"] == "serve")
    victim = ray.get_actor(victim_name, namespace="serve")
    long = {**REQUEST, "max_tokens": 48, "guided_regex": " [a-z ]+"}
    with ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(_complete, url, {**long, "seed": k}, 180) for k in range(12)]
        time.sleep(1.0)  # some requests are in flight on the victim; which ones does not matter
        ray.kill(victim, no_restart=True)
        responses = [f.result() for f in futures]  # every one ends: none hangs (timeout 180 s)
    statuses = [r.status_code for r in responses]
    assert all(status == 200 or status >= 500 for status in statuses), statuses
    assert statuses.count(200) >= 1  # the other replica answered in full
    for response in responses:
        if response.status_code == 200:
            assert response.json()["choices"][0]["finish_reason"] in ("stop", "length")
    # Serve replaces the dead replica: two replicas again, one of them new.
    for _ in range(120):
        status = serve.status().applications["default"].deployments["awrs"]
        if status.status == "HEALTHY" and status.replica_states.get("RUNNING", 0) == 2:
            break
        time.sleep(1)
    after = set(_replicas(url))
    assert len(after) == 2 and after != before
