"""The OpenAI-compatible server, through the official ``openai`` client and raw HTTP.

A live uvicorn server on 127.0.0.1 serves a tiny table model with a chat template
(:class:`awrs.server.testing.ToyChatModel`), so every test runs in well under a second.
"""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
import regex

from awrs.errors import ConfigError
from awrs.server import Limits, create_app
from awrs.server.batcher import Batcher, Ticket
from awrs.server.errors import ApiError
from awrs.server.testing import LiveServer, ToyChatModel
from awrs.smc.commitment import STREAMING_POLICY

LIMITS = {"max_tokens": 64, "max_particles": 16, "max_n": 4, "max_body_bytes": 20_000, "max_batch_particles": 64,
              "max_seconds": 20.0}
TIMEOUT = 30.0  # seconds: a bound that only prevents hangs


@pytest.fixture(scope="module")
def server():
    with LiveServer(create_app(ToyChatModel(), limits=LIMITS)) as live:
        yield live


@pytest.fixture(scope="module")
def slow():
    """A server whose model sleeps 10 ms per row per step: runs long enough to interrupt."""
    model = ToyChatModel(delay=0.01)
    with LiveServer(create_app(model, limits=LIMITS)) as live:
        live.model = model
        yield live


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=TIMEOUT)


def chat(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def awrs_field(response) -> dict:
    return response.model_extra["awrs"]


# -- happy paths -----------------------------------------------------------------------------


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == ["toy"]
    health = httpx.get(server.url + "/health", timeout=TIMEOUT).json()
    assert health["status"] == "ok" and health["model"] == "toy" and health["worker_alive"]
    assert health["limits"]["max_tokens"] == 64


def test_completion_with_regex(client):
    response = client.completions.create(
        model="toy", prompt="Three digits:", max_tokens=8,
        extra_body={"guided_regex": r"\d{3}", "particles": 6, "seed": 0},
    )
    (choice,) = response.choices
    assert regex.fullmatch(r"\d{3}", choice.text)
    assert choice.finish_reason == "stop"
    ext = awrs_field(response)
    assert ext["method"] == "awrs-smc" and ext["particles"] == 6 and ext["seed"] == 0
    assert abs(sum(ext["posterior"].values()) - 1.0) < 1e-9
    assert choice.text == max(ext["posterior"], key=ext["posterior"].get)
    assert ext["log_marginal_likelihood"] < 0
    assert ext["stats"]["particles"] == 6 and ext["stats"]["tokens"] >= 6 * 3
    assert ext["batch"]["requests"] >= 1
    assert response.usage.prompt_tokens > 0
    assert response.usage.completion_tokens >= 2
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_chat_n_returns_top_of_posterior(client):
    response = client.chat.completions.create(
        model="toy", messages=chat("a, b or c?"), n=3,
        extra_body={"guided_regex": "[abc]{1,3}", "particles": 12, "seed": 3},
    )
    posterior = awrs_field(response)["posterior"]
    texts = [c.message.content for c in response.choices]
    assert 1 <= len(texts) <= 3 and len(set(texts)) == len(texts)
    assert texts == list(posterior)[: len(texts)]
    probabilities = [c.model_extra["probability"] for c in response.choices]
    assert probabilities == sorted(probabilities, reverse=True)
    for choice in response.choices:
        assert regex.fullmatch("[abc]{1,3}", choice.message.content)
        assert choice.message.role == "assistant" and choice.finish_reason == "stop"


def test_seed_makes_answers_reproducible(client):
    def ask():
        return client.chat.completions.create(
            model="toy", messages=chat("number"), extra_body={"guided_regex": r"[1-9]\d{0,4}", "seed": 11},
        )

    first, second = ask(), ask()
    assert awrs_field(first)["posterior"] == awrs_field(second)["posterior"]
    assert first.choices[0].message.content == second.choices[0].message.content


def test_guided_choice(client):
    response = client.chat.completions.create(
        model="toy", messages=chat("yes or no?"), extra_body={"guided_choice": ["yes", "no", "a+b"], "seed": 0},
    )
    assert response.choices[0].message.content in {"yes", "no", "a+b"}
    assert set(awrs_field(response)["posterior"]) <= {"yes", "no", "a+b"}


def test_without_constraint_any_text(client):
    response = client.completions.create(model="toy", prompt="x", max_tokens=5, extra_body={"seed": 1})
    assert awrs_field(response)["constraint"] == "predicate any text"
    assert response.choices[0].finish_reason in {"stop", "length"}


def test_methods_and_options(client):
    for method in ("lcd", "masking", "unconstrained", "masking-smc"):
        response = client.completions.create(
            model="toy", prompt="x", max_tokens=6, seed=2,
            extra_body={"guided_regex": "[a-z]{1,3}", "method": method, "particles": 4, "ess_threshold": 0.3},
        )
        ext = awrs_field(response)
        assert ext["method"] == method
        if method != "unconstrained" or ext["posterior"]:
            assert regex.fullmatch("[a-z]{1,3}", response.choices[0].text)
    response = client.completions.create(
        model="toy", prompt="x", max_tokens=6, seed=2,
        extra_body={"guided_regex": "[a-z]{1,3}", "particles": 4, "masks": "always"},
    )
    assert awrs_field(response)["stats"]["masks"] > 0
    assert regex.fullmatch("[a-z]{1,3}", response.choices[0].text)
    response = client.completions.create(
        model="toy", prompt="x", max_tokens=6, seed=2,
        extra_body={"guided_regex": "[a-z]{1,3}", "particles": 4, "budget_twist": "on", "resample_power": 1.0},
    )
    assert regex.fullmatch("[a-z]{1,3}", response.choices[0].text)


def test_no_sample_finishes_with_length(client):
    response = client.completions.create(
        model="toy", prompt="x", max_tokens=4, extra_body={"guided_regex": r"\d{10}", "seed": 0, "particles": 3},
    )
    (choice,) = response.choices
    assert choice.text == "" and choice.finish_reason == "length"
    ext = awrs_field(response)
    assert ext["posterior"] == {} and "max_tokens" in ext["message"]
    assert ext["log_marginal_likelihood"] is None  # -inf is sent as null


def test_text_cut_at_max_tokens_finishes_with_length(client):
    response = client.completions.create(
        model="toy", prompt="x", max_tokens=3, extra_body={"guided_regex": r"[c-z]{3}", "seed": 0, "particles": 3},
    )  # one letter per token (the toy vocabulary's only two-letter token is "ab")
    assert response.choices[0].finish_reason == "length"
    assert regex.fullmatch("[c-z]{3}", response.choices[0].text)


def test_json_schema_response_format(client):
    pytest.importorskip("awrs.constraints.json_schema.schema")
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
              "additionalProperties": False}
    response = client.chat.completions.create(
        model="toy", messages=chat("JSON please"), max_tokens=32,
        response_format={"type": "json_schema", "json_schema": {"name": "thing", "schema": schema, "strict": True}},
        extra_body={"seed": 0, "particles": 16},
    )
    value = json.loads(response.choices[0].message.content)
    assert set(value) == {"a"} and isinstance(value["a"], int)
    guided = client.completions.create(model="toy", prompt="x", max_tokens=32,
                                       extra_body={"guided_json": schema, "seed": 1, "particles": 16})
    assert set(json.loads(guided.choices[0].text)) == {"a"}


def test_json_object_response_format(client):
    pytest.importorskip("awrs.constraints.json_schema.schema")
    response = client.chat.completions.create(
        model="toy", messages=chat("JSON"), max_tokens=64, response_format={"type": "json_object"},
        extra_body={"seed": 2, "particles": 16},
    )
    assert awrs_field(response)["constraint"].startswith("json schema")
    # the toy model writes long strings, so some seeds end with every particle truncated
    for text in awrs_field(response)["posterior"]:
        assert isinstance(json.loads(text), dict)


def test_invalid_json_schema_is_4xx(server):
    pytest.importorskip("awrs.constraints.json_schema.schema")
    reply = post(server, "/v1/completions", {"prompt": "x", "guided_json": {"type": "no-such-type"}})
    assert 400 <= reply.status_code < 500
    assert_error_shape(reply.json())


def test_grammar(client):
    pytest.importorskip("awrs.constraints.grammar.grammar")
    response = client.completions.create(
        model="toy", prompt="x", max_tokens=12,
        extra_body={"guided_grammar": 'start: ("a" | "b")+ "1"', "seed": 0, "particles": 6},
    )
    assert regex.fullmatch("[ab]+1", response.choices[0].text)


# -- streaming -------------------------------------------------------------------------------


def test_chat_streaming_matches_non_streaming(client):
    options = {"model": "toy", "messages": chat("letters"), "n": 2,
                   "extra_body": {"guided_regex": "[a-c]{2,3}", "seed": 5, "particles": 8}}
    whole = client.chat.completions.create(**dict(options, extra_body=dict(options["extra_body"], **STREAMING_POLICY)))
    stream = client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **options)
    texts: dict[int, str] = {}
    finish: dict[int, str] = {}
    usage = ext = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason is not None:
                finish[choice.index] = choice.finish_reason
        if chunk.model_extra.get("awrs"):
            ext = chunk.model_extra["awrs"]
    assert [texts[k] for k in sorted(texts)] == [c.message.content for c in whole.choices]
    assert set(finish.values()) == {"stop"}
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens
    assert ext is not None and ext["posterior"] == awrs_field(whole)["posterior"]


def test_completion_streaming_wire_format(server):
    body = {"prompt": "x", "stream": True, "guided_regex": r"\d\d", "seed": 0, "max_tokens": 4}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=TIMEOUT) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = [line for line in reply.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(line[len("data: "):]) for line in events[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    text = "".join(c["choices"][0]["text"] for c in chunks)
    assert regex.fullmatch(r"\d\d", text)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and "awrs" in chunks[-1]


def _sse_events(server, path: str, body: dict) -> list[tuple[str | None, object]]:
    """(event name, parsed data) of every server-sent event of a streamed request."""
    events, name = [], None
    with httpx.stream("POST", server.url + path, json=body, timeout=TIMEOUT) as reply:
        assert reply.status_code == 200, reply.read()
        for line in reply.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                data = line[len("data: "):]
                events.append((name, data if data == "[DONE]" else json.loads(data)))
                name = None
    return events


@pytest.mark.parametrize("method", ["awrs-smc", "masking-smc", "lcd", "unconstrained"])
def test_streamed_text_is_settled_and_never_retracted(server, method):
    """Over many seeds: each choice's deltas concatenate to the non-streamed answer, and every
    delta is settled when sent -- all particles still carrying weight, in the step event sent
    just before it, begin with the text streamed so far (so no later text can contradict it)."""
    streamed_early = 0
    for seed in range(8):
        body = {"prompt": "x", "guided_regex": r"id: [a-c]{1,4}\.", "seed": seed, "max_tokens": 16,
                "particles": 6, "n": 2, "method": method}
        # a streamed request commits text as it goes (STREAMING_POLICY); the same options make
        # the non-streamed request draw the same answer
        whole = post(server, COMPLETIONS, dict(body, **STREAMING_POLICY)).json()
        events = _sse_events(server, COMPLETIONS, dict(body, stream=True, stream_options={"awrs_events": True}))
        assert events[-1] == (None, "[DONE]")
        texts: dict[int, str] = {}
        last_step = None
        for name, data in events[:-1]:
            if name == "awrs":
                last_step = data
                continue
            for c in data["choices"]:
                texts[c["index"]] = texts.get(c["index"], "") + c["text"]
                if c["index"] == 0 and c["text"] and last_step is not None and data.get("awrs") is None:
                    carrying = [p["text"] for p in last_step["particles"] if p["log_weight"] is not None]
                    if c["finish_reason"] is None and len(carrying) > 0 and any(p["state"] == "running" for p in last_step["particles"]):
                        assert all(t.startswith(texts[0]) for t in carrying), (seed, texts[0], carrying)
                        streamed_early += 1
        assert [texts[k] for k in sorted(texts)] == [c["text"] for c in whole["choices"]], (method, seed)
    if method != "unconstrained":  # the constraint forces "id: ": it settles before the end
        assert streamed_early > 0


def test_awrs_events_describe_every_step(server):
    body = {"prompt": "x", "guided_regex": r"[a-c]{3}", "seed": 1, "max_tokens": 8, "particles": 5,
            "stream": True, "stream_options": {"awrs_events": True}}
    steps = [data for name, data in _sse_events(server, COMPLETIONS, body) if name == "awrs"]
    assert [s["step"] for s in steps] == list(range(1, len(steps) + 1)) and len(steps) >= 3
    for s in steps:
        assert len(s["particles"]) == 5 and isinstance(s["resampled"], bool)
        assert all(p["state"] in ("running", "finished", "dead") for p in s["particles"])
        assert s["ess"] is None or 0 <= s["ess"] <= 5
    assert all(p["state"] != "running" for p in steps[-1]["particles"])
    plain = {k: v for k, v in body.items() if k != "stream_options"}
    assert not [name for name, _ in _sse_events(server, COMPLETIONS, plain) if name is not None]


def test_streaming_error_is_a_json_4xx_before_the_stream(server):
    reply = post(server, "/v1/chat/completions",
                 {"messages": chat("x"), "stream": True, "guided_regex": "[unclosed"})
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "invalid_regex"


# -- errors ----------------------------------------------------------------------------------


def post(server, path: str, body, **kwargs):
    if isinstance(body, (bytes, str)):
        return httpx.post(server.url + path, content=body, timeout=TIMEOUT, **kwargs)
    return httpx.post(server.url + path, json=body, timeout=TIMEOUT, **kwargs)


def assert_error_shape(body: dict) -> dict:
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)
    return error


CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
BAD_REQUESTS = [
    ("invalid regex", COMPLETIONS, {"prompt": "x", "guided_regex": "(a"}, 400, "guided_regex", "invalid_regex"),
    ("unknown field", CHAT, {"messages": chat("x"), "guided_regx": "a"}, 400, "guided_regx", "unknown_field"),
    ("malformed body", CHAT, b'{"messages": [', 400, None, "invalid_json"),
    ("body not an object", CHAT, b"[1, 2]", 400, None, "invalid_json"),
    ("missing messages", CHAT, {"model": "toy"}, 400, "messages", "missing_field"),
    ("wrong type", COMPLETIONS, {"prompt": "x", "max_tokens": "many"}, 400, "max_tokens", "invalid_value"),
    ("max_tokens over limit", COMPLETIONS, {"prompt": "x", "max_tokens": 65}, 400, "max_tokens", "limit_exceeded"),
    ("max_tokens zero", COMPLETIONS, {"prompt": "x", "max_tokens": 0}, 400, "max_tokens", "invalid_value"),
    ("particles over limit", CHAT, {"messages": chat("x"), "particles": 17}, 400, "particles", "limit_exceeded"),
    ("n over limit", CHAT, {"messages": chat("x"), "n": 5}, 400, "n", "limit_exceeded"),
    ("n above particles", CHAT, {"messages": chat("x"), "n": 3, "particles": 2}, 400, "n", "invalid_value"),
    ("unknown method", CHAT, {"messages": chat("x"), "method": "beam"}, 400, "method", "invalid_value"),
    ("disabled method", CHAT, {"messages": chat("x"), "method": "rejection"}, 400, "method", "invalid_value"),
    ("bad ess_threshold", CHAT, {"messages": chat("x"), "ess_threshold": 2}, 400, "ess_threshold", "invalid_value"),
    ("bad masks", CHAT, {"messages": chat("x"), "masks": "often"}, 400, "masks", "invalid_value"),
    ("bad budget_twist", CHAT, {"messages": chat("x"), "budget_twist": "maybe"}, 400, "budget_twist",
     "invalid_value"),
    ("bad resample_power", CHAT, {"messages": chat("x"), "resample_power": 1.5}, 400, "resample_power",
     "invalid_value"),
    ("negative commit_lag", CHAT, {"messages": chat("x"), "commit_lag": -1}, 400, "commit_lag", "invalid_value"),
    ("negative seed", CHAT, {"messages": chat("x"), "seed": -1}, 400, "seed", "invalid_value"),
    ("bad time_limit", CHAT, {"messages": chat("x"), "time_limit": 0}, 400, "time_limit", "invalid_value"),
    ("temperature", CHAT, {"messages": chat("x"), "temperature": 0.2}, 400, "temperature", "unsupported_parameter"),
    ("stop", COMPLETIONS, {"prompt": "x", "stop": ["\n"]}, 400, "stop", "unsupported_parameter"),
    ("logprobs", CHAT, {"messages": chat("x"), "logprobs": True}, 400, "logprobs", "unsupported_parameter"),
    ("two constraints", CHAT, {"messages": chat("x"), "guided_regex": "a", "guided_choice": ["a"]}, 400,
     "guided_choice", "conflicting_constraints"),
    ("empty choice", CHAT, {"messages": chat("x"), "guided_choice": []}, 400, "guided_choice", "invalid_value"),
    ("schema missing", CHAT, {"messages": chat("x"), "response_format": {"type": "json_schema"}}, 400,
     "response_format.json_schema", "missing_field"),
    ("bad response_format", CHAT, {"messages": chat("x"), "response_format": {"type": "xml"}}, 400,
     "response_format.type", "invalid_value"),
    ("image content", CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     400, "messages.0.content.0", "unsupported_parameter"),
    ("tool role", CHAT, {"messages": [{"role": "tool", "content": "x"}]}, 400, "messages.0.role", "invalid_value"),
    ("empty messages", CHAT, {"messages": []}, 400, "messages", "invalid_value"),
    ("several prompts", COMPLETIONS, {"prompt": ["a", "b"]}, 400, "prompt", "unsupported_parameter"),
    ("stream_options without stream", COMPLETIONS, {"prompt": "x", "stream_options": {"include_usage": True}},
     400, "stream_options", "invalid_value"),
    ("untokenizable prompt", COMPLETIONS, {"prompt": "caf\u00e9"}, 400, "prompt", "invalid_prompt"),
    ("token id outside vocabulary", COMPLETIONS, {"prompt": [1, 100000]}, 400, "prompt", "invalid_prompt"),
    ("unknown model", COMPLETIONS, {"prompt": "x", "model": "gpt-9"}, 404, "model", "model_not_found"),
]


@pytest.mark.parametrize("path, body, status, param, code", [case[1:] for case in BAD_REQUESTS],
                         ids=[case[0] for case in BAD_REQUESTS])
def test_bad_requests_get_openai_errors(server, path, body, status, param, code):
    reply = post(server, path, body)
    assert reply.status_code == status, reply.text
    error = assert_error_shape(reply.json())
    assert (error["param"], error["code"]) == (param, code)
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")


def test_body_over_the_limit_is_413(server):
    reply = post(server, COMPLETIONS, {"prompt": "x" * 30_000})
    assert reply.status_code == 413
    assert assert_error_shape(reply.json())["code"] == "request_too_large"
    # without Content-Length (a chunked upload) the limit holds too
    chunks = iter([b'{"prompt": "', b"x" * 25_000, b'"}'])
    reply = httpx.post(server.url + COMPLETIONS, content=chunks, timeout=TIMEOUT)
    assert reply.status_code == 413


def test_unknown_route_and_method(server):
    reply = httpx.get(server.url + "/v1/nothing", timeout=TIMEOUT)
    assert reply.status_code == 404 and assert_error_shape(reply.json())["code"] == "not_found"
    reply = httpx.get(server.url + COMPLETIONS, timeout=TIMEOUT)
    assert reply.status_code == 405 and assert_error_shape(reply.json())["code"] == "method_not_allowed"


def test_openai_client_raises_on_4xx(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="toy", messages=chat("x"), extra_body={"guided_regex": "(("})
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == "guided_regex"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="other", prompt="x")


def test_server_keeps_serving_after_errors(server, client):
    for _ in range(3):
        post(server, COMPLETIONS, b"{{{")
    response = client.completions.create(model="toy", prompt="x", extra_body={"guided_regex": "ok"})
    assert response.choices[0].text == "ok"


# -- run time and cancellation -----------------------------------------------------------------


def test_time_limit_keeps_the_answer_bounded(slow):
    client = openai.OpenAI(base_url=slow.url + "/v1", api_key="unused", max_retries=0, timeout=TIMEOUT)
    response = client.completions.create(
        model="toy", prompt="x", max_tokens=64,
        extra_body={"guided_regex": "[a-z]{60}", "particles": 4, "seed": 0, "time_limit": 0.3},
    )
    ext = awrs_field(response)
    assert ext["message"].startswith("stopped early: time limit")
    assert response.choices[0].finish_reason == "length" and response.choices[0].text == ""
    assert ext["stats"]["stopped_particles"] == 4


def test_disconnected_client_frees_its_work(slow):
    def health():
        return httpx.get(slow.url + "/health", timeout=TIMEOUT).json()

    cancelled = ("awrs_requests_total", (("outcome", "cancelled"),))
    before, counted_before = health(), scrape(slow)[cancelled]
    calls_before = slow.model.calls
    body = {"prompt": "x", "max_tokens": 64, "guided_regex": "[a-z]{60}", "particles": 8, "seed": 0}
    with pytest.raises(httpx.ReadTimeout):  # gives up after 0.5 s and closes the connection
        httpx.post(slow.url + COMPLETIONS, json=body, timeout=httpx.Timeout(TIMEOUT, read=0.5))
    deadline = time.monotonic() + TIMEOUT
    while True:
        now = health()
        if (now["cancelled"] > before["cancelled"] and now["running"] == 0 and now["pending"] == 0
                and scrape(slow)[cancelled] == counted_before + 1):
            break
        assert time.monotonic() < deadline, now
        time.sleep(0.05)
    # the run needed 61 model steps; it was stopped well before
    assert slow.model.calls - calls_before < 61
    # and the server still answers
    reply = post(slow, COMPLETIONS, {"prompt": "x", "guided_regex": "ok", "particles": 1})
    assert reply.json()["choices"][0]["text"] == "ok"


# -- configuration, auth, models without a chat template ------------------------------------------


def test_limits_are_validated():
    with pytest.raises(ConfigError):
        Limits(max_particles=500, max_batch_particles=100)
    with pytest.raises(ConfigError):
        Limits.from_options({"max_tokns": 3})
    with pytest.raises(ConfigError):
        Limits(methods=("beam",))
    with pytest.raises(ConfigError):
        create_app(ToyChatModel(), limits={"max_n": 0})


def test_api_key_and_model_without_chat_template(trap_model):
    app = create_app(trap_model, api_key="sesame", limits={"default_max_tokens": 4})
    with LiveServer(app) as live:
        reply = httpx.get(live.url + "/v1/models", timeout=TIMEOUT)
        assert reply.status_code == 401 and assert_error_shape(reply.json())["code"] == "invalid_api_key"
        client = openai.OpenAI(base_url=live.url + "/v1", api_key="sesame", max_retries=0, timeout=TIMEOUT)
        assert client.models.list().data[0].id == "table"
        response = client.completions.create(model="table", prompt=[0], extra_body={"guided_regex": "ab|c",
                                                                                      "seed": 0})
        assert response.choices[0].text in {"ab", "c"}
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="table", messages=chat("a"))
        assert caught.value.body["code"] == "no_chat_template"


def test_batch_failure_only_fails_the_request_at_fault():
    from awrs import Predicate, Regex

    def explode(text: str) -> bool:
        if text:
            raise RuntimeError("boom")
        return True

    batcher = Batcher(ToyChatModel(), max_batch_particles=64)
    good = Ticket(prompt="x", constraint=Regex("[a-z]{2}"), options={"particles": 4, "max_tokens": 4, "seed": 0})
    bad = Ticket(prompt="x", constraint=Predicate(explode), options={"particles": 4, "max_tokens": 4, "seed": 0})
    batcher._pending.extend([good, bad])  # queued together, run synchronously here
    batcher._admit()
    assert batcher._running == [good, bad]
    while batcher._driver.runs:
        batcher._finish(batcher._driver.step())
    assert regex.fullmatch("[a-z]{2}", good.future.result(timeout=0).result.text)
    with pytest.raises(ApiError) as caught:
        bad.future.result(timeout=0)
    assert caught.value.status == 500 and caught.value.code == "constraint_error"
    assert batcher.counters["requests"] == 1 and batcher.counters["errors"] == 1


def test_batcher_respects_the_particle_cap():
    from awrs import Regex

    batcher = Batcher(ToyChatModel(), max_batch_particles=10)
    tickets = [Ticket(prompt="x", constraint=Regex("a"), options={"particles": p, "max_tokens": 2}) for p in (4, 5, 3)]
    batcher._pending.extend(tickets)
    batcher._admit()
    assert batcher._running == tickets[:2]  # 4 + 5 fit; 3 more would make 12
    finished = batcher._driver.step()
    while not finished:  # the third joins as soon as a running request leaves
        finished = batcher._driver.step()
        batcher._finish(finished)
    batcher._admit()
    assert tickets[2] in batcher._running and sum(t.particles for t in batcher._running) <= 10


def test_the_models_rows_and_cells_bound_a_batch():
    """llama.cpp holds n_seq_max rows and n_ctx cells: requests wait for room, and one that
    could never fit is refused instead of failing the session."""
    from awrs import Regex

    model = ToyChatModel()
    model.max_rows, model.max_cells = 6, 40
    batcher = Batcher(model, max_batch_particles=64)
    assert batcher.max_batch_particles == 6
    options = {"particles": 3, "max_tokens": 4, "seed": 0}
    first, second, third = (Ticket(prompt="x", constraint=Regex("[a-z]{2}"), options=dict(options)) for _ in range(3))
    huge = Ticket(prompt="x", constraint=Regex("[a-z]{2}"), options={"particles": 3, "max_tokens": 60, "seed": 0})
    batcher._pending.extend([first, second])
    batcher._admit()  # 1 + 3 * 5 = 16 cells each: two fit in 40, not three
    assert batcher._running == [first, second]
    batcher._pending.append(third)
    batcher._admit()
    assert third not in batcher._running and list(batcher._pending) == [third]
    while batcher._driver.runs:
        batcher._finish(batcher._driver.step())
    batcher._pending.clear()
    batcher._pending.append(huge)
    batcher._admit()
    with pytest.raises(ApiError) as caught:
        huge.future.result(timeout=0)
    assert caught.value.code == "context_length_exceeded"


def test_a_request_joins_a_running_session_at_the_next_step():
    """Continuous batching: a short request sent while a long one runs starts at once and
    finishes long before the long one."""
    from awrs import Regex

    batcher = Batcher(ToyChatModel(), max_batch_particles=16)
    long = Ticket(prompt="x", constraint=Regex("[a-z]{30}"), options={"particles": 2, "max_tokens": 32, "seed": 0})
    short = Ticket(prompt="y", constraint=Regex("[0-9]{2}"), options={"particles": 2, "max_tokens": 4, "seed": 1})
    batcher._pending.append(long)
    batcher._admit()
    for _ in range(5):
        batcher._finish(batcher._driver.step())
    batcher._pending.append(short)
    batcher._admit()
    assert batcher._running == [long, short] and batcher._driver.rows == 4
    steps = 0
    while not short.future.done():
        batcher._finish(batcher._driver.step())
        steps += 1
    assert steps <= 4 and not long.future.done()  # a few steps, not the long request's 30
    assert regex.fullmatch("[0-9]{2}", short.future.result().result.text)
    while batcher._driver.runs:
        batcher._finish(batcher._driver.step())
    assert regex.fullmatch("[a-z]{30}", long.future.result().result.text)
    assert long.future.result().batch["id"] == short.future.result().batch["id"]


# -- wiring of JSON schema and grammar constraints, with stand-ins --------------------------------


@pytest.fixture
def stand_ins(monkeypatch):
    """Fake awrs.constraints.json_schema / grammar modules that record what they were given.

    They check the server's wiring (which field becomes which constraint, with which options)
    whether or not the real modules have landed.
    """
    import sys
    import types

    from awrs import Regex

    seen = []

    class JsonSchema(Regex):
        def __init__(self, schema, whitespace="compact"):
            if schema == {"type": "no-such-type"}:
                raise ConfigError("invalid JSON schema: unknown type 'no-such-type'")
            seen.append(("json", schema, whitespace))
            super().__init__(r'\{"a":[1-9]\}' if schema != {"type": "object"} else r"\{\}")

    class Grammar(Regex):
        def __init__(self, text):
            seen.append(("grammar", text))
            super().__init__("[ab]+1")

    for name, cls in (("json_schema", JsonSchema), ("grammar", Grammar)):
        module = types.ModuleType(f"awrs.constraints.{name}")
        setattr(module, cls.__name__, cls)
        monkeypatch.setitem(sys.modules, f"awrs.constraints.{name}", module)
    return seen


def test_constraint_fields_reach_json_schema_and_grammar(client, server, stand_ins):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    response = client.chat.completions.create(
        model="toy", messages=chat("x"), response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
        extra_body={"seed": 0},
    )
    assert json.loads(response.choices[0].message.content)["a"] in range(1, 10)
    client.completions.create(model="toy", prompt="x", extra_body={"guided_json": json.dumps(schema), "seed": 0})
    response = client.chat.completions.create(model="toy", messages=chat("x"), response_format={"type": "json_object"})
    assert response.choices[0].message.content == "{}"
    response = client.completions.create(model="toy", prompt="x", extra_body={"guided_grammar": "start: x"})
    assert regex.fullmatch("[ab]+1", response.choices[0].text)
    assert stand_ins == [("json", schema, "compact"), ("json", schema, "compact"),
                         ("json", {"type": "object"}, "compact"), ("grammar", "start: x")]
    reply = post(server, COMPLETIONS, {"prompt": "x", "guided_json": {"type": "no-such-type"}})
    assert reply.status_code == 400
    assert assert_error_shape(reply.json())["code"] == "invalid_schema"
    reply = post(server, COMPLETIONS, {"prompt": "x", "guided_json": "{not json"})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "guided_json"


def test_null_n_and_stream_mean_the_defaults(server):
    reply = post(server, COMPLETIONS, {"prompt": "x", "n": None, "stream": None, "max_tokens": None,
                                       "guided_regex": "ok", "temperature": 1, "top_p": 1.0, "user": "me"})
    assert reply.status_code == 200
    assert [c["text"] for c in reply.json()["choices"]] == ["ok"]


def test_unexpected_exception_is_a_json_500():
    app = create_app(ToyChatModel())

    async def boom():
        raise RuntimeError("unexpected")

    app.add_api_route("/boom", boom)
    with LiveServer(app, log_level="critical") as live:
        reply = httpx.get(live.url + "/boom", timeout=TIMEOUT)
        assert reply.status_code == 500
        error = assert_error_shape(reply.json())
        assert error["type"] == "server_error" and "unexpected" not in error["message"]
        assert httpx.get(live.url + "/health", timeout=TIMEOUT).status_code == 200


# -- the command line, and serve() with the embedded model in a subprocess ----------------------


def test_serve_options_become_limits():
    import argparse

    from awrs.server.__main__ import main
    from awrs.server.cli import add_serve_arguments, limits_from_args

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["--max-tokens", "32", "--max-seconds", "2.5", "--methods", "awrs-smc,lcd",
                              "--port", "0"])
    assert limits_from_args(args) == {"max_tokens": 32, "max_seconds": 2.5, "methods": ("awrs-smc", "lcd")}
    assert (args.host, args.model, args.api_key) == ("127.0.0.1", None, None)
    Limits.from_options(limits_from_args(args))
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-n", "0"])
    # bad limits fail before the model is loaded: exit status 2, no traceback
    assert main(["--max-particles", "500", "--max-batch-particles", "100"]) == 2


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.model
def test_serve_embedded_model_chat_in_subprocess():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import subprocess
    import sys

    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "awrs.server", "--port", str(port), "--max-tokens", "16", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert process.poll() is None, process.stdout.read().decode(errors="replace")[-2000:]
            try:
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.5)
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)
        name = client.models.list().data[0].id
        pattern = r"(19|20)\d\d"
        response = client.chat.completions.create(
            model=name, messages=chat("In which year did Apollo 11 land on the Moon? Answer with the year."),
            max_tokens=8, extra_body={"guided_regex": pattern, "particles": 4, "seed": 0},
        )
        assert regex.fullmatch(pattern, response.choices[0].message.content)
        assert response.usage.prompt_tokens > 10  # the chat template was applied
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model=name, messages=chat("x"), max_tokens=17)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        process.stdout.close()


def test_full_queue_is_429_and_shutdown_is_503():
    from awrs import Regex

    batcher = Batcher(ToyChatModel(), max_pending=1)
    batcher.start = lambda: None  # no worker: tickets stay queued

    def ticket():
        return Ticket(prompt="x", constraint=Regex("a"), options={"particles": 1, "max_tokens": 2})

    first = ticket()
    batcher.submit(first)
    with pytest.raises(ApiError) as caught:
        batcher.submit(ticket())
    assert caught.value.status == 429 and caught.value.type == "rate_limit_error"
    batcher.stop()
    with pytest.raises(ApiError) as caught:
        first.future.result(timeout=0)
    assert caught.value.status == 503
    with pytest.raises(ApiError) as caught:
        batcher.submit(ticket())
    assert caught.value.status == 503


def scrape(live) -> dict[tuple[str, tuple], float]:
    """``GET /metrics`` parsed: {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(live.url + "/metrics", timeout=TIMEOUT).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_requests_tokens_and_time():
    pytest.importorskip("prometheus_client")
    with LiveServer(create_app(ToyChatModel(), limits=LIMITS)) as live:
        start = scrape(live)
        assert start[("awrs_requests_total", (("outcome", "ok"),))] == 0
        assert start[("awrs_queue_length", ())] == 0 and start[("awrs_running_rows", ())] == 0
        tokens = 0
        for seed in range(2):
            reply = post(live, COMPLETIONS, {"prompt": "x", "guided_regex": "[ab]{2,5}", "particles": 3, "seed": seed})
            tokens += reply.json()["awrs"]["stats"]["tokens"]
        assert post(live, COMPLETIONS, {"prompt": "x", "particles": 0}).status_code == 400
        assert httpx.get(live.url + "/v1/nothing", timeout=TIMEOUT).status_code == 404  # not a completion
        after = scrape(live)
        outcomes = {dict(labels)["outcome"]: v for (name, labels), v in after.items() if name == "awrs_requests_total"}
        assert outcomes == {"ok": 2, "invalid": 1, "rejected": 0, "cancelled": 0, "error": 0}
        assert after[("awrs_particle_tokens_total", ())] == tokens > 0
        for histogram in ("awrs_request_seconds", "awrs_time_to_first_token_seconds", "awrs_queue_wait_seconds",
                          "awrs_rejections_per_token"):
            assert after[(histogram + "_count", ())] == 2, histogram
        assert 0 < after[("awrs_time_to_first_token_seconds_sum", ())] <= after[("awrs_request_seconds_sum", ())]
        assert after[("awrs_seconds_total", (("part", "model"),))] > 0
        assert after[("awrs_constraint_checks_total", ())] > 0 and after[("awrs_batches_total", ())] >= 1
        assert after[("awrs_queue_length", ())] == 0 and after[("awrs_running_requests", ())] == 0


def test_metrics_need_the_api_key_when_there_is_one():
    pytest.importorskip("prometheus_client")
    with LiveServer(create_app(ToyChatModel(), limits=LIMITS, api_key="k")) as live:
        assert httpx.get(live.url + "/metrics", timeout=TIMEOUT).status_code == 401
        ok = httpx.get(live.url + "/metrics", headers={"Authorization": "Bearer k"}, timeout=TIMEOUT)
        assert ok.status_code == 200 and "awrs_requests_total" in ok.text


def _gauges(live) -> dict[str, float]:
    names = ("awrs_queue_length", "awrs_running_requests", "awrs_running_rows", "awrs_open_sessions",
             "awrs_session_rows", "awrs_requests_in_progress")
    metrics = scrape(live)
    return {name: metrics[(name, ())] for name in names}


def _wait_for_gauges(live, wanted) -> dict[str, float]:
    """Scrape until ``wanted(gauges)`` holds (a bound of TIMEOUT only prevents a hang)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        gauges = _gauges(live)
        if wanted(gauges):
            return gauges
        assert time.monotonic() < deadline, gauges
        time.sleep(0.02)


def test_metrics_show_open_sessions_rows_and_requests_in_progress(slow):
    """While a request runs, the gauges show its session, its rows and the request itself; once
    it is answered, and once a streamed request is hung up on, every one is back to 0."""
    import threading

    pytest.importorskip("prometheus_client")
    _wait_for_gauges(slow, lambda g: not any(g.values()))  # what earlier tests left has drained
    body = {"prompt": "x", "max_tokens": 64, "guided_regex": "[a-z]{60}", "particles": 4, "seed": 0}
    replies = []
    worker = threading.Thread(target=lambda: replies.append(post(slow, COMPLETIONS, body)))
    worker.start()
    # 60 steps of 4 rows at 10 ms a row: the request runs for seconds, rows all alive
    running = _wait_for_gauges(slow, lambda g: g["awrs_session_rows"] > 0)
    worker.join(TIMEOUT)
    assert running == {"awrs_queue_length": 0, "awrs_running_requests": 1, "awrs_running_rows": 4,
                       "awrs_open_sessions": 1, "awrs_session_rows": 4, "awrs_requests_in_progress": 1}
    assert replies[0].status_code == 200
    assert regex.fullmatch("[a-z]{60}", replies[0].json()["choices"][0]["text"])
    _wait_for_gauges(slow, lambda g: not any(g.values()))
    streamed = dict(body, stream=True, stream_options={"awrs_events": True})
    with httpx.stream("POST", slow.url + COMPLETIONS, json=streamed, timeout=TIMEOUT) as reply:
        events = 0
        for line in reply.iter_lines():
            events += line.startswith("event: awrs")
            if events == 2:
                break  # hang up mid-run
    _wait_for_gauges(slow, lambda g: not any(g.values()))
