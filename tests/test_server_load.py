"""Load on the server: many concurrent clients, every one answered, valid, and batched together.

The throughput measurement with the embedded model (marked ``model``) also runs standalone:

    .venv/bin/python tests/test_server_load.py [--sequential 6] [--concurrent 24] [--particles 4]
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
import regex

from awrs.server import create_app
from awrs.server.testing import LiveServer, ToyChatModel

REQUESTS = 60
BATCH_PARTICLES = 40
BOUND = 180.0  # seconds: only prevents a hang


def _request(i: int) -> tuple[str, dict, str]:
    """Request ``i``: (endpoint, arguments, the regex its answer must fully match).

    Every constraint names ``i``, so an answer delivered to the wrong client fails validation.
    """
    options = {"particles": 2 + i % 7, "seed": i}
    if i % 3 == 0:
        pattern = rf"{i:02d}-[a-z]{{1,4}}"
        return "completions", {"prompt": f"request {i}", "max_tokens": 16,
                                   "extra_body": dict(options, guided_regex=pattern)}, pattern
    if i % 3 == 1:
        choices = [f"req{i}-yes", f"req{i}-no"]
        return "chat", {"messages": [{"role": "user", "content": f"request {i}"}], "max_tokens": 16,
                            "extra_body": dict(options, guided_choice=choices)}, "|".join(map(regex.escape, choices))
    pattern = rf"\[{i}\] \d{{1,3}}"
    return "chat", {"messages": [{"role": "user", "content": f"request {i}"}], "max_tokens": 16,
                        "extra_body": dict(options, guided_regex=pattern)}, pattern


async def _ask(client, i: int) -> tuple[int, str, dict, str]:
    """Send request ``i`` (every fifth one streamed); return (i, text, awrs field, pattern)."""
    kind, kwargs, pattern = _request(i)
    stream = i % 5 == 0
    create = client.completions.create if kind == "completions" else client.chat.completions.create
    if not stream:
        response = await create(model="toy", **kwargs)
        choice = response.choices[0]
        text = choice.text if kind == "completions" else choice.message.content
        return i, text, response.model_extra["awrs"], pattern
    text, ext = "", None
    async for chunk in await create(model="toy", stream=True, **kwargs):
        for choice in chunk.choices:
            text += (choice.text if kind == "completions" else choice.delta.content) or ""
        ext = chunk.model_extra.get("awrs") or ext
    return i, text, ext, pattern


def test_many_concurrent_clients_are_batched_and_all_answered():
    model = ToyChatModel(delay=0.0005)  # runs overlap, so requests meet in the queue
    app = create_app(model, limits={"max_batch_particles": BATCH_PARTICLES, "max_tokens": 32})
    with LiveServer(app) as server:
        before = httpx.get(server.url + "/health").json()
        calls_before = model.calls

        async def main():
            async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0,
                                          timeout=BOUND) as client:
                return await asyncio.wait_for(asyncio.gather(*(_ask(client, i) for i in range(REQUESTS))), BOUND)

        answers = asyncio.run(main())
        after = httpx.get(server.url + "/health").json()

    # every request answered, with its own valid text
    assert sorted(i for i, *_ in answers) == list(range(REQUESTS))
    for i, text, ext, pattern in answers:
        assert regex.fullmatch(pattern, text), (i, text, pattern)
        assert ext["posterior"] and all(regex.fullmatch(pattern, t) for t in ext["posterior"])
        assert ext["seed"] == i and ext["particles"] == 2 + i % 7
        assert ext["batch"]["particles"] <= BATCH_PARTICLES
    # nothing lost, nothing failed
    assert after["requests"] - before["requests"] == REQUESTS
    assert after["errors"] == before["errors"] and after["cancelled"] == before["cancelled"]
    assert after["pending"] == 0 and after["running"] == 0
    # batched: requests shared model calls
    batches: dict[int, list[int]] = {}
    for _, _, ext, _ in answers:
        batches.setdefault(ext["batch"]["id"], []).append(ext["batch"]["requests"])
    assert after["max_requests_per_batch"] > 1
    assert len(batches) < REQUESTS and max(len(v) for v in batches.values()) > 1
    # a session's last answer counts every request that joined it: exactly the answers in it
    assert all(max(counts) == len(counts) for counts in batches.values())
    steps = sum(ext["stats"]["steps"] for _, _, ext, _ in answers)
    assert model.calls - calls_before < steps  # fewer model calls than requests' steps


def test_clients_that_leave_under_load_lose_nothing_and_leave_nothing_behind():
    """50 concurrent requests, 10 of which hang up mid-way: the other 40 get their full, valid
    answers, the 10 are counted as cancelled, and afterwards no request, row or ticket remains."""
    import gc

    from prometheus_client.parser import text_string_to_metric_families

    from awrs.server.batcher import Ticket

    model = ToyChatModel(delay=0.002)  # 40 rows: ~80 ms a step, so the long requests run for seconds
    app = create_app(model, limits={"max_batch_particles": BATCH_PARTICLES, "max_tokens": 40})
    leaving = set(range(2, 50, 5))  # 10 of them
    with LiveServer(app) as server:
        before = httpx.get(server.url + "/health").json()

        async def leave(i: int) -> None:
            body = {"prompt": f"request {i}", "max_tokens": 40, "guided_regex": "[a-z]{38}", "particles": 4,
                    "seed": i}
            async with httpx.AsyncClient(timeout=httpx.Timeout(BOUND, read=0.3 + 0.02 * i)) as client:
                with pytest.raises(httpx.ReadTimeout):  # hangs up: the connection is closed
                    await client.post(server.url + "/v1/completions", json=body)

        async def main():
            async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0,
                                          timeout=BOUND) as client:
                tasks = [leave(i) if i in leaving else _ask(client, i) for i in range(50)]
                return await asyncio.wait_for(asyncio.gather(*tasks), BOUND)

        answers = [a for a in asyncio.run(main()) if a is not None]
        deadline = time.monotonic() + BOUND
        while True:  # the server notices a hang-up within its poll interval, then stops the rows
            after = httpx.get(server.url + "/health").json()
            if after["cancelled"] - before["cancelled"] == len(leaving) and after["running"] == 0:
                break
            assert time.monotonic() < deadline, after
            time.sleep(0.05)
        text = httpx.get(server.url + "/metrics").text
        metrics = {(s.name, tuple(s.labels.values())): s.value
                   for family in text_string_to_metric_families(text) for s in family.samples}

    assert sorted(i for i, *_ in answers) == sorted(set(range(50)) - leaving)
    for i, text, ext, pattern in answers:
        assert regex.fullmatch(pattern, text), (i, text, pattern)
    assert after["requests"] - before["requests"] == 40 and after["errors"] == before["errors"]
    assert after["pending"] == 0 and after["running"] == 0
    assert metrics[("awrs_requests_total", ("ok",))] == 40
    assert metrics[("awrs_requests_total", ("cancelled",))] == len(leaving)
    assert metrics[("awrs_running_rows", ())] == 0 and metrics[("awrs_queue_length", ())] == 0
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is Ticket]  # every request's state was freed


# -- throughput with the embedded model ------------------------------------------------------------

SENTENCE = r"[A-Z][a-z]+( [a-z]+){2,8}\."
PROMPTS = ["Describe the sea.", "Describe a forest.", "Describe a city at night.", "Describe the desert.",
           "Describe a mountain.", "Describe the rain.", "Describe a garden.", "Describe the snow."]


def measure(server_url: str, *, sequential: int, concurrent: int, particles: int, max_tokens: int) -> dict:
    """Requests/s and particle-tokens/s: ``sequential`` requests one at a time, then ``concurrent`` at once.

    Each phase starts with one untimed warm-up request.
    """

    async def one(client, name: str, k: int) -> dict:
        response = await client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": PROMPTS[k % len(PROMPTS)] + " One sentence."}],
            max_tokens=max_tokens, extra_body={"guided_regex": SENTENCE, "particles": particles, "seed": k},
        )
        ext = response.model_extra["awrs"]
        text = response.choices[0].message.content
        assert not ext["posterior"] or regex.fullmatch(SENTENCE, text), text
        return ext

    async def run(count: int, at_once: bool) -> dict:
        async with openai.AsyncOpenAI(base_url=server_url + "/v1", api_key="unused", max_retries=0,
                                      timeout=BOUND) as client:
            name = (await client.models.list()).data[0].id
            await one(client, name, 99)  # warm-up: the first forward passes are slow
            started = time.perf_counter()
            if at_once:
                exts = await asyncio.wait_for(asyncio.gather(*(one(client, name, k) for k in range(count))), BOUND)
            else:
                exts = [await asyncio.wait_for(one(client, name, k), BOUND) for k in range(count)]
            wall = time.perf_counter() - started
        tokens = sum(e["stats"]["tokens"] for e in exts)
        return {"requests": count, "seconds": round(wall, 2), "requests_per_s": round(count / wall, 3),
                "particle_tokens": tokens, "particle_tokens_per_s": round(tokens / wall, 1),
                "max_batch_requests": max(e["batch"]["requests"] for e in exts)}

    return {"single": asyncio.run(run(sequential, False)), "concurrent": asyncio.run(run(concurrent, True)),
            "particles": particles, "max_tokens": max_tokens}


@pytest.fixture(scope="module")
def embedded_model():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import awrs

    try:
        return awrs.load_model(verbose=False)
    except awrs.ModelError as err:
        pytest.skip(f"embedded model unavailable: {err}")


@pytest.mark.model
def test_embedded_model_throughput_batched_vs_single(embedded_model):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a CPU shared with other work, two threads stall each other
    try:
        with LiveServer(create_app(embedded_model)) as server:
            figures = measure(server.url, sequential=1, concurrent=4, particles=2, max_tokens=12)
            health = httpx.get(server.url + "/health").json()
    finally:
        torch.set_num_threads(threads)
    print("\nserver throughput (shared CPU):", json.dumps(figures))
    assert figures["concurrent"]["max_batch_requests"] > 1
    assert health["errors"] == 0 and health["requests"] == 7  # with two warm-up requests


if __name__ == "__main__":
    import argparse

    import awrs

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sequential", type=int, default=6)
    parser.add_argument("--concurrent", type=int, default=24)
    parser.add_argument("--particles", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=1, help="repeat single then concurrent, interleaved")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 avoids stalls on a busy CPU)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with LiveServer(create_app(awrs.load_model())) as live:
        for _ in range(args.rounds):
            result = measure(live.url, sequential=args.sequential, concurrent=args.concurrent,
                             particles=args.particles, max_tokens=args.max_tokens)
            print(json.dumps(result), flush=True)
        health = httpx.get(live.url + "/health").json()
    print(json.dumps({k: health[k] for k in ("batches", "requests", "errors", "max_requests_per_batch",
                                              "max_particles_per_batch", "particle_tokens", "busy_seconds")}))
