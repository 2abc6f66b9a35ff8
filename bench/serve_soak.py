"""Soak test of `awrs serve`: seeded mixed traffic for a while, then checks that nothing was
lost or left open and that the server's memory stopped growing.

    .venv/bin/python bench/serve_soak.py                              # 20 minutes, 4 clients
    .venv/bin/python bench/serve_soak.py --minutes 2 --concurrency 2 --server-cpus 0
    .venv/bin/python bench/serve_soak.py --url http://127.0.0.1:8000 --minutes 5

Unless ``--url`` names a running server, the script starts ``awrs serve`` on a free port
(the embedded model on the default backend unless ``--model``/``--backend`` say otherwise)
and stops it at the end. ``--concurrency`` clients send requests one after another, drawn
from one seeded sequence: short and long requests, streamed and not, JSON-schema, regex and
choice constraints on both completion endpoints (chat only when the model has a chat
template), malformed or out-of-range bodies that must get a 4xx with a reason, and clients
that hang up (a stream closed after a few chunks or given up while silent, a request given up
by a client timeout, a connection closed halfway through sending its body). The first
requests cover every kind once, so even a short run sends the whole mix.

Every answer is checked: a 200 parses, each choice's text satisfies its constraint
(``regex.fullmatch``; JSON: ``json.loads`` and ``jsonschema``) unless the run found no
sample, and a stream ends with ``[DONE]`` after a finish reason (or the ``no_sample`` error
event). Every few seconds the server process's RSS and its ``/metrics`` gauges (queue, running
requests and rows, open decoding sessions and their rows, requests in progress) are sampled.
After the traffic the script waits for the server to drain and prints ONE summary line:

    requests sent, answered (valid answers), cancelled (the client hung up), rejected (4xx
    with a reason: the bad bodies, and any 429), lost = sent - answered - cancelled -
    rejected, split into failed (a wrong answer, a 5xx, a bad body accepted) and unanswered
    (no complete answer: a timeout, a dropped connection, a stream without its end);
    RSS at the end of the warm-up and at the end, and its growth after the warm-up (slope of
    a least-squares line through the samples, MB/min); what is left open after draining.

Exit status 0 when nothing is lost, every bad body was rejected, nothing is left open, the
server counted every completion request sent (when it was started here) and logged no
traceback, and the RSS growth after the warm-up
is within ``--max-growth`` (judged only when the window after the warm-up lasts at least
``--judge-minutes``); 1 otherwise; 2 when the server could not be started or reached.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jsonschema
import regex

GAUGES = {  # /metrics gauge -> short name in the samples
    "awrs_queue_length": "queued",
    "awrs_running_requests": "running",
    "awrs_running_rows": "rows",
    "awrs_open_sessions": "sessions",
    "awrs_session_rows": "session_rows",
    "awrs_requests_in_progress": "in_progress",
}
SHORT_TOKENS = 16
LONG_TOKENS = 128

# -- the requests ------------------------------------------------------------------------------

SHORT_REGEXES = [
    ("Give me a date in 1969.", r"1969-(0[1-9]|1[012])-(0[1-9]|[12][0-9]|3[01])"),
    ("Name a user id.", r"id: [a-z]{2,6}-[0-9]{2}"),
    ("Is the sky blue? Answer yes or no.", r"(yes|no)"),
    ("A phone number:", r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}"),
    ("Pick a colour and its hex code.", r"[A-Z][a-z]+: #[0-9A-F]{6}"),
]
LONG_REGEXES = [
    ("Describe the sea in one long sentence.", r"[A-Z][a-z]+( [a-z,]+){3,60}\."),
    ("List some fruits, one per line.", r"(- [a-z ]{1,30}\n){2,12}"),
    ("Tell me a story.", r"[A-Za-z ,.']{20,600}"),
]
SHORT_SCHEMAS = [
    ("A point as JSON:", {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                          "required": ["x", "y"], "additionalProperties": False}),
    ("A person as JSON:", {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 12}, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
        "required": ["name", "age"], "additionalProperties": False}),
    ("Your favourite colour as JSON:", {"type": "object", "properties": {
        "colour": {"enum": ["red", "green", "blue"]}, "sure": {"type": "boolean"}},
        "required": ["colour", "sure"], "additionalProperties": False}),
]
LONG_SCHEMAS = [
    ("A book review as JSON:", {"type": "object", "properties": {
        "title": {"type": "string", "maxLength": 40},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 1, "maxItems": 5},
        "rating": {"type": "number", "minimum": 0, "maximum": 5}},
        "required": ["title", "tags", "rating"], "additionalProperties": False}),
    ("A shopping list as JSON:", {"type": "array", "items": {"type": "object", "properties": {
        "item": {"type": "string", "maxLength": 16}, "count": {"type": "integer", "minimum": 1}},
        "required": ["item", "count"], "additionalProperties": False}, "minItems": 1, "maxItems": 6}),
]
CHOICES = [
    ("Which is a fruit?", ["apple", "hammer", "cloud"]),
    ("Pick a weekday.", ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]),
]

#: kind -> weight in the mix after the opening round
WEIGHTS = {
    "regex_short": 4, "regex_long": 2, "json_short": 3, "json_long": 1, "json_object": 1, "choice": 1,
    "bad_body": 3, "hangup_stream": 1.5, "hangup_timeout": 1.5, "hangup_upload": 0.5,
}


@dataclass
class Spec:
    """One request: where it goes, its body, how its answer is checked, how the client behaves."""

    index: int
    kind: str
    path: str
    body: dict | bytes
    constraint: tuple | None = None  # ("regex", pattern) | ("json", schema) | ("choice", texts)
    stream: bool = False
    chat: bool = False
    bad: str | None = None  # the bad body's name: it must be refused with a 4xx
    hangup_after: int | None = None  # close the stream after this many events
    read_timeout: float | None = None  # hang up when nothing arrives for this long
    upload_part: float | None = None  # send this fraction of the body, then close the connection


@dataclass
class ServerInfo:
    model: str
    limits: dict
    chat: bool


class Traffic:
    """The seeded sequence of requests every client draws from."""

    def __init__(self, seed: int, info: ServerInfo) -> None:
        self.rng = random.Random(seed)
        self.info = info
        self.count = 0
        kinds = sorted(WEIGHTS)
        self.rng.shuffle(kinds)
        self.opening = kinds  # every kind once first, so that short runs cover the mix
        self.kinds = sorted(WEIGHTS)
        self.weights = [WEIGHTS[k] for k in self.kinds]
        self.bad = bad_bodies(info.limits)

    @property
    def opened(self) -> bool:
        return self.count >= len(self.opening)

    def next(self) -> Spec:
        rng = self.rng
        if self.count < len(self.opening):
            kind = self.opening[self.count]
        else:
            kind = rng.choices(self.kinds, self.weights)[0]
        self.count += 1
        if kind == "bad_body":
            return self._bad(self.count - 1)
        limits = self.info.limits
        chat = self.info.chat and rng.random() < 0.5
        # mostly the default method; masking-smc computes a whole-vocabulary mask every step, which
        # for a JSON schema stalls every batched request for most of a second, so only short ones use it
        methods = ["awrs-smc"] * 8 + ["lcd"] + (["masking-smc"] if kind in ("regex_short", "choice") else [])
        methods = [m for m in methods if m in limits["methods"]]
        body: dict = {"particles": min(rng.randint(1, 4), limits["max_particles"]), "seed": rng.randrange(2**32)}
        if methods:
            body["method"] = rng.choice(methods)
        if rng.random() < 0.3:
            body["model"] = self.info.model
        long = kind in ("regex_long", "json_long") or kind.startswith("hangup")
        body["max_tokens"] = min(LONG_TOKENS if long else SHORT_TOKENS * (2 if "json" in kind else 1),
                                 limits["max_tokens"])
        if kind in ("regex_short", "regex_long") or kind.startswith("hangup"):
            prompt, pattern = rng.choice(LONG_REGEXES if long else SHORT_REGEXES)
            body["guided_regex"] = pattern
            constraint = ("regex", pattern)
        elif kind in ("json_short", "json_long"):
            prompt, schema = rng.choice(LONG_SCHEMAS if long else SHORT_SCHEMAS)
            if rng.random() < 0.5:
                body["response_format"] = {"type": "json_schema",
                                           "json_schema": {"name": "answer", "schema": schema}}
            else:
                body["guided_json"] = schema
            constraint = ("json", schema)
        elif kind == "json_object":
            prompt = "Describe a cat as a JSON object."
            body["response_format"] = {"type": "json_object"}
            body["max_tokens"] = min(48, limits["max_tokens"])
            constraint = ("json", {"type": "object"})
        else:
            prompt, texts = rng.choice(CHOICES)
            body["guided_choice"] = texts
            constraint = ("choice", texts)
        if body["particles"] >= 2 and rng.random() < 0.25 and limits["max_n"] >= 2:
            body["n"] = 2
        if chat:
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        spec = Spec(self.count - 1, kind, "/v1/chat/completions" if chat else "/v1/completions", body,
                    constraint=constraint, chat=chat)
        if kind == "hangup_stream":
            spec.stream = True
            spec.hangup_after = rng.randint(1, 4)
            if rng.random() < 0.5:  # one event per step: a hang-up mid-run for sure
                body["stream_options"] = {"awrs_events": True}
            else:  # text may settle only at the end: give up on a silent stream too
                spec.read_timeout = round(rng.uniform(0.5, 3.0), 2)
        elif kind == "hangup_timeout":  # from before the constraint is built to mid-run
            spec.read_timeout = round(rng.uniform(0.05, 3.0), 2)
        elif kind == "hangup_upload":
            spec.upload_part = round(rng.uniform(0.1, 0.9), 2)
        else:
            spec.stream = rng.random() < 0.4
            if spec.stream and rng.random() < 0.3:
                body["stream_options"] = {"include_usage": True}
        if spec.stream:
            body["stream"] = True
        return spec

    def _bad(self, index: int) -> Spec:
        name, path, body = self.rng.choice(self.bad)
        return Spec(index, "bad_body", path, body, bad=name)


def bad_bodies(limits: dict) -> list[tuple[str, str, dict | bytes]]:
    """(name, path, body) of requests the server must refuse with a 4xx and a reason."""
    chat, completions = "/v1/chat/completions", "/v1/completions"
    msgs = [{"role": "user", "content": "hi"}]
    return [
        ("truncated JSON", completions, b'{"prompt": "x", '),
        ("unbalanced JSON", chat, b'{"messages": [}'),
        ("not JSON", completions, b"prompt=hello"),
        ("empty body", chat, b""),
        ("invalid UTF-8", completions, b'{"prompt": "\xff\xfe"}'),
        ("array body", completions, b"[1, 2]"),
        ("string body", chat, b'"hello"'),
        ("prompt of wrong type", completions, {"prompt": 5}),
        ("max_tokens of wrong type", completions, {"prompt": "x", "max_tokens": "many"}),
        ("messages of wrong type", chat, {"messages": "hi"}),
        ("particles not an integer", completions, {"prompt": "x", "particles": 2.5}),
        ("content of wrong type", chat, {"messages": [{"role": "user", "content": 7}]}),
        ("n a list", chat, {"messages": msgs, "n": [1]}),
        ("unknown response_format type", chat, {"messages": msgs, "response_format": {"type": "xml"}}),
        ("regex response_format", completions, {"prompt": "x", "response_format": {"type": "regex", "regex": "a"}}),
        ("unknown guided field", completions, {"prompt": "x", "guided_yaml": "a: 1"}),
        ("misspelt guided_regex", chat, {"messages": msgs, "guided_regx": "a"}),
        ("max_tokens zero", completions, {"prompt": "x", "max_tokens": 0}),
        ("max_tokens over the limit", completions, {"prompt": "x", "max_tokens": limits["max_tokens"] + 1}),
        ("particles zero", chat, {"messages": msgs, "particles": 0}),
        ("particles over the limit", chat, {"messages": msgs, "particles": limits["max_particles"] + 1}),
        ("n over the limit", completions, {"prompt": "x", "n": limits["max_n"] + 1}),
        ("n above particles", completions, {"prompt": "x", "n": 2, "particles": 1}),
        ("ess_threshold above 1", chat, {"messages": msgs, "ess_threshold": 1.5}),
        ("negative seed", completions, {"prompt": "x", "seed": -1}),
        ("negative time_limit", completions, {"prompt": "x", "time_limit": -1}),
        ("unknown method", chat, {"messages": msgs, "method": "beam"}),
        ("invalid regex", completions, {"prompt": "x", "guided_regex": "(a"}),
        ("invalid schema", completions, {"prompt": "x", "guided_json": {"type": "no-such-type"}}),
        ("empty choice", chat, {"messages": msgs, "guided_choice": []}),
        ("schema missing", chat, {"messages": msgs, "response_format": {"type": "json_schema"}}),
        ("two constraints", completions, {"prompt": "x", "guided_regex": "a", "guided_choice": ["a"]}),
        ("temperature", chat, {"messages": msgs, "temperature": 0.5}),
        ("stop sequence", completions, {"prompt": "x", "stop": ["\n"]}),
        ("unknown model", completions, {"prompt": "x", "model": "no-such-model"}),
        ("empty messages", chat, {"messages": []}),
        ("body over the limit", completions, {"prompt": "x" * (limits["max_body_bytes"] + 1)}),
    ]


# -- checking answers ------------------------------------------------------------------------------


class Failure(Exception):
    """The server answered, wrongly."""


class Unanswered(Exception):
    """No complete answer came."""


def satisfies(constraint: tuple, text: str) -> bool:
    kind, value = constraint
    if kind == "regex":
        return regex.fullmatch(value, text) is not None
    if kind == "choice":
        return text in value
    try:
        jsonschema.validate(json.loads(text), value)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def check_texts(spec: Spec, texts: list[str], finishes: list, ext: dict | None) -> bool:
    """Raise :class:`Failure` unless the choices are right; True when the run found no sample."""
    if not isinstance(ext, dict) or not isinstance(ext.get("posterior"), dict):
        raise Failure("no awrs field with a posterior")
    posterior = ext["posterior"]
    if not posterior:
        if texts != [""] or finishes != ["length"]:
            raise Failure(f"no sample, yet choices {texts!r} finishing {finishes!r}")
        return True
    if texts != list(posterior)[: len(texts)] or len(texts) != min(spec.body.get("n", 1), len(posterior)):
        raise Failure(f"choices {texts!r} are not the posterior's most probable texts")
    for text in posterior:
        if not satisfies(spec.constraint, text):
            kind, value = spec.constraint
            raise Failure(f"text {text!r} does not satisfy {kind} {json.dumps(value)[:80]}")
    if any(f not in ("stop", "length") for f in finishes):
        raise Failure(f"finish reasons {finishes!r}")
    return False


def check_body(spec: Spec, data) -> bool:
    """A non-streamed 200: True when the run found no sample; raises :class:`Failure`."""
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
        raise Failure("a 200 without choices")
    choices = data["choices"]
    try:
        texts = [c["message"]["content"] if spec.chat else c["text"] for c in choices]
        finishes = [c["finish_reason"] for c in choices]
    except (KeyError, TypeError) as err:
        raise Failure(f"a choice without its text: {err}") from None
    if not isinstance(data.get("usage"), dict):
        raise Failure("a 200 without usage")
    return check_texts(spec, texts, finishes, data.get("awrs"))


class StreamReader:
    """The server-sent events of one streamed answer, checked as they come."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.texts: dict[int, str] = {}
        self.finishes: dict[int, str] = {}
        self.ext = None
        self.error = None
        self.done = False
        self.events = 0
        self._name = None

    def feed(self, line: str) -> None:
        if self.done and line:
            raise Failure(f"data after [DONE]: {line[:80]!r}")
        if line.startswith("event: "):
            self._name = line[len("event: "):]
            return
        if not line.startswith("data: "):
            return
        self.events += 1
        data = line[len("data: "):]
        name, self._name = self._name, None
        if data == "[DONE]":
            self.done = True
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            raise Failure(f"an event that is not JSON: {data[:80]!r}") from None
        if name == "awrs":
            return
        if "error" in chunk:
            self.error = chunk
            self.ext = chunk.get("awrs") or self.ext
            return
        if self.error is not None:
            raise Failure("a chunk after the error event")
        for c in chunk.get("choices", []):
            k = c["index"]
            piece = (c["delta"].get("content") if self.spec.chat else c["text"]) or ""
            if k in self.finishes and piece:
                raise Failure(f"text for choice {k} after its finish reason")
            self.texts[k] = self.texts.get(k, "") + piece
            if c.get("finish_reason") is not None:
                self.finishes[k] = c["finish_reason"]
        if chunk.get("awrs"):
            self.ext = chunk["awrs"]

    def finish(self) -> bool:
        """At the end of the body: True when the run found no sample; raises otherwise."""
        if not self.done:
            raise Unanswered("the stream ended without [DONE]")
        if self.error is not None:
            error = self.error["error"]
            if error.get("code") != "no_sample":
                raise Failure(f"the stream ended with an error: {error.get('code')}: {error.get('message')}")
            return True
        if not self.texts or sorted(self.texts) != list(range(len(self.texts))):
            raise Failure(f"choices {sorted(self.texts)} streamed")
        if sorted(self.finishes) != sorted(self.texts):
            raise Failure("a choice without a finish reason")
        order = sorted(self.texts)
        return check_texts(self.spec, [self.texts[k] for k in order], [self.finishes[k] for k in order], self.ext)


def check_refusal(spec: Spec, reply: httpx.Response) -> str:
    """A bad body's answer: the error code, or :class:`Failure`."""
    if not 400 <= reply.status_code < 500:
        raise Failure(f"bad body {spec.bad!r} answered {reply.status_code}")
    try:
        error = reply.json()["error"]
        message = error["message"]
    except (ValueError, KeyError, TypeError):
        raise Failure(f"bad body {spec.bad!r}: a {reply.status_code} without an error message") from None
    if not isinstance(message, str) or not message.strip():
        raise Failure(f"bad body {spec.bad!r}: an empty reason")
    return str(error.get("code"))


# -- the clients ---------------------------------------------------------------------------------


@dataclass
class Tally:
    counts: Counter = field(default_factory=Counter)  # outcome -> requests
    kinds: dict = field(default_factory=dict)  # kind -> Counter of outcomes
    problems: list = field(default_factory=list)  # (outcome, index, kind, reason), the first 50
    reasons: Counter = field(default_factory=Counter)  # "outcome: reason" -> requests
    refusals: Counter = field(default_factory=Counter)  # error codes of the refused bad bodies
    bad_sent: int = 0
    bad_refused: int = 0
    records: list = field(default_factory=list)  # one row per request, for --out

    def add(self, spec: Spec, outcome: str, reason: str | None = None, seconds: float | None = None,
            stats: dict | None = None) -> None:
        self.counts[outcome] += 1
        body = spec.body if isinstance(spec.body, dict) else {}
        self.records.append({"index": spec.index, "kind": spec.kind, "outcome": outcome, "stream": spec.stream,
                             "chat": spec.chat, "method": body.get("method"), "particles": body.get("particles"),
                             "max_tokens": body.get("max_tokens"), "seconds": seconds,
                             "steps": (stats or {}).get("steps"), "tokens": (stats or {}).get("tokens")})
        self.kinds.setdefault(spec.kind, Counter())[outcome] += 1
        if outcome in ("failed", "unanswered"):
            self.reasons[f"{outcome}: {reason.split(':')[0][:60]}"] += 1
            if len(self.problems) < 50:
                self.problems.append((outcome, spec.index, spec.kind, reason))


async def send(client: httpx.AsyncClient, spec: Spec, tally: Tally, timeout: float) -> None:
    """Send one request, check what comes back, and count its outcome once."""
    tally.counts["sent"] += 1
    if spec.bad is not None:
        tally.bad_sent += 1
    content = spec.body if isinstance(spec.body, bytes) else json.dumps(spec.body).encode()
    headers = {"Content-Type": "application/json"}
    clock = time.monotonic()

    def seconds() -> float:
        return round(time.monotonic() - clock, 3)

    try:
        if spec.upload_part is not None:
            await _upload_and_leave(client, spec, content)
            tally.add(spec, "cancelled", seconds=seconds())
            return
        if spec.stream:
            outcome, stats = await _streamed(client, spec, content, headers, timeout)
        else:
            limit = httpx.Timeout(timeout, read=spec.read_timeout) if spec.read_timeout else httpx.Timeout(timeout)
            try:
                reply = await client.post(spec.path, content=content, headers=headers, timeout=limit)
            except httpx.ReadTimeout:
                if spec.read_timeout is None:
                    raise
                tally.add(spec, "cancelled", seconds=seconds())  # our own hang-up, on purpose
                return
            outcome, stats = _answered(spec, reply, tally)
    except Failure as err:
        tally.add(spec, "failed", str(err), seconds=seconds())
        return
    except (Unanswered, httpx.HTTPError, OSError) as err:
        tally.add(spec, "unanswered", f"{type(err).__name__}: {err}", seconds=seconds())
        return
    except (KeyError, TypeError, AttributeError, IndexError) as err:  # an answer of an unexpected shape
        tally.add(spec, "failed", f"malformed answer: {type(err).__name__}: {err}", seconds=seconds())
        return
    tally.add(spec, outcome, seconds=seconds(), stats=stats)


def _answered(spec: Spec, reply: httpx.Response, tally: Tally) -> tuple[str, dict | None]:
    if spec.bad is not None:
        tally.refusals[check_refusal(spec, reply)] += 1
        tally.bad_refused += 1
        return "rejected", None
    if reply.status_code == 429:  # the queue was full: refused with a reason, not lost
        return "rejected", None
    if reply.status_code != 200:
        raise Failure(f"status {reply.status_code}: {reply.text[:200]}")
    try:
        data = reply.json()
    except ValueError:
        raise Failure("a 200 whose body is not JSON") from None
    return "answered_no_sample" if check_body(spec, data) else "answered", data["awrs"].get("stats")


async def _upload_and_leave(client: httpx.AsyncClient, spec: Spec, content: bytes) -> None:
    """Send the headers and part of the body on a connection of its own, then close it: the
    server sees the client leave while it reads the body."""
    url = client.base_url
    port = url.port or (443 if url.scheme == "https" else 80)
    _, writer = await asyncio.open_connection(url.host, port, ssl=url.scheme == "https" or None)
    auth = client.headers.get("authorization")
    head = (f"POST {spec.path} HTTP/1.1\r\nHost: {url.host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(content)}\r\n" + (f"Authorization: {auth}\r\n" if auth else "") + "\r\n")
    try:
        writer.write(head.encode() + content[: int(len(content) * spec.upload_part)])
        await writer.drain()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _streamed(client: httpx.AsyncClient, spec: Spec, content: bytes, headers: dict,
                    timeout: float) -> tuple[str, dict | None]:
    limit = httpx.Timeout(timeout, read=spec.read_timeout) if spec.read_timeout else httpx.Timeout(timeout)
    try:
        return await _read_stream(client, spec, content, headers, limit)
    except httpx.ReadTimeout:
        if spec.read_timeout is None:
            raise
        return "cancelled", None  # our own hang-up, before the answer's end


async def _read_stream(client: httpx.AsyncClient, spec: Spec, content: bytes, headers: dict,
                       limit: httpx.Timeout) -> tuple[str, dict | None]:
    async with client.stream("POST", spec.path, content=content, headers=headers, timeout=limit) as reply:
        if reply.status_code != 200:
            await reply.aread()
            if reply.status_code == 429:
                return "rejected", None
            raise Failure(f"status {reply.status_code}: {reply.text[:200]}")
        if not reply.headers.get("content-type", "").startswith("text/event-stream"):
            raise Failure(f"a stream of type {reply.headers.get('content-type')}")
        reader = StreamReader(spec)
        async for line in reply.aiter_lines():
            reader.feed(line)
            if spec.hangup_after is not None and not reader.done and reader.events >= spec.hangup_after:
                return "cancelled", None  # leaving the block closes the connection mid-stream
        outcome = "answered_no_sample" if reader.finish() else "answered"
        return outcome, (reader.ext or {}).get("stats") if isinstance(reader.ext, dict) else None


# -- the server and its process ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def awrs_command() -> list[str]:
    """``awrs`` beside this interpreter (a virtualenv's), else ``python -m awrs.server``."""
    script = Path(sys.executable).with_name("awrs")
    if script.exists():
        return [str(script), "serve"]
    found = shutil.which("awrs")
    return [found, "serve"] if found else [sys.executable, "-m", "awrs.server"]


class ServerProcess:
    """``awrs serve`` in a subprocess, its output in a log file."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = awrs_command() + ["--port", str(self.port), "--log-level", "warning"]
        if args.model:
            command += ["--model", args.model]
        if args.backend:
            command += ["--backend", args.backend]
        command += args.server_arg
        if args.server_log:
            self.log_path = Path(args.server_log)
            self._temporary = False
        else:
            handle, name = tempfile.mkstemp(prefix="awrs-soak-", suffix=".log")
            os.close(handle)
            self.log_path, self._temporary = Path(name), True
        cpus = args.server_cpus
        self._log = open(self.log_path, "wb")  # noqa: SIM115 -- closed in stop()
        self.command = command
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        self.pid = self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def tracebacks(self) -> int:
        try:
            return self.log_path.read_text(errors="replace").count("Traceback (most recent call last)")
        except OSError:
            return 0

    def stop(self) -> int | None:
        """Stop it as Ctrl-C would (a graceful shutdown); its exit status."""
        if self.alive():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        self._log.close()
        return self.process.returncode

    def cleanup(self) -> None:
        """Remove the log, if it is a temporary file."""
        if self._temporary:
            with contextlib.suppress(OSError):
                self.log_path.unlink()


def find_listener(url: str) -> int | None:
    """The PID listening on ``url``'s port on this machine, if psutil can tell."""
    try:
        import psutil
    except ImportError:
        return None
    port = httpx.URL(url).port or 80
    with contextlib.suppress(Exception):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return conn.pid
    return None


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of ``pid`` in MB (psutil when installed, else /proc/PID/status)."""
    if pid is None:
        return None
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 -- the process has gone: no sample
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


async def scrape(client: httpx.AsyncClient) -> dict[str, float]:
    """``/metrics``: the gauges above and the request outcomes (``outcome:ok``...)."""
    reply = await client.get("/metrics", timeout=30)
    reply.raise_for_status()
    out: dict[str, float] = {}
    for line in reply.text.splitlines():
        match = METRIC_LINE.match(line)
        if not match:
            continue
        name, labels, value = match.groups()
        if name in GAUGES:
            out[GAUGES[name]] = float(value)
        elif name == "awrs_requests_total" and labels:
            outcome = re.search(r'outcome="([^"]*)"', labels)
            if outcome:
                out["outcome:" + outcome.group(1)] = float(value)
    return out


async def server_info(client: httpx.AsyncClient) -> ServerInfo:
    health = (await client.get("/health", timeout=30)).json()
    probe = await client.post("/v1/chat/completions", timeout=600, json={
        "messages": [{"role": "user", "content": "Say a."}], "guided_choice": ["a"], "max_tokens": 2,
        "particles": 1, "seed": 0})
    if probe.status_code not in (200, 400):
        raise RuntimeError(f"the chat probe got {probe.status_code}: {probe.text[:300]}")
    chat = probe.status_code == 200  # a base model answers 400 no_chat_template
    return ServerInfo(model=health["model"], limits=health["limits"], chat=chat)


async def wait_until_up(client: httpx.AsyncClient, server: ServerProcess | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server is not None and not server.alive():
            raise RuntimeError(f"the server exited with status {server.process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get("/health", timeout=5)).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not answer /health within {timeout:g} s")
        await asyncio.sleep(0.5)


# -- the soak ----------------------------------------------------------------------------------------


def slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) points, in MB per minute."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    return 60 * sum((t - mean_t) * (y - mean_y) for t, y in points) / var


async def soak(args: argparse.Namespace, log) -> dict:
    """Run the soak; the summary as a dict (``problems`` empty when it passed)."""
    server = None
    if args.url:
        url, pid = args.url.rstrip("/"), args.pid or find_listener(args.url)
    else:
        server = ServerProcess(args)
        url, pid = server.url, server.pid
        log(f"started {' '.join(server.command)} (pid {pid}, log {server.log_path})")
    wall = time.monotonic()
    try:
        return await _soak(args, log, url, pid, server, wall)
    finally:
        if server is not None and server.alive():
            server.stop()


async def _soak(args, log, url: str, pid: int | None, server: ServerProcess | None, wall: float) -> dict:
    tally = Tally()
    samples: list[dict] = []
    pool = httpx.Limits(max_connections=args.concurrency + 2, max_keepalive_connections=args.concurrency + 2)
    key = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    async with httpx.AsyncClient(base_url=url, limits=pool, headers=key) as client, \
            httpx.AsyncClient(base_url=url, headers=key) as watcher:
        try:
            await wait_until_up(watcher, server, args.start_timeout)
            info = await server_info(watcher)
            baseline = await scrape(watcher)
            health_before = (await watcher.get("/health", timeout=30)).json()
        except (RuntimeError, httpx.HTTPError, ValueError, KeyError) as err:
            if server is not None:  # why it failed, on stderr: the summary stays one line
                print(f"serve_soak: the server's output ({server.log_path}):\n{server.log_tail()}",
                      file=sys.stderr)
            return {"setup_error": f"{type(err).__name__}: {err}"}
        log(f"serving {info.model} (chat: {'yes' if info.chat else 'no'}); {args.concurrency} clients for "
            f"{args.minutes:g} min, warm-up {args.warmup:g} min, seed {args.seed}")
        traffic = Traffic(args.seed, info)
        started = time.monotonic()
        deadline = started + 60 * args.minutes
        warm_at = 60 * args.warmup
        traffic_over = asyncio.Event()

        async def client_loop() -> None:
            while time.monotonic() < deadline or not traffic.opened:
                await send(client, traffic.next(), tally, args.request_timeout)

        async def sample(phase: str) -> dict:
            row = {"t": round(time.monotonic() - started, 2), "phase": phase, "rss_mb": rss_mb(pid)}
            try:
                gauges = await scrape(watcher)
            except (httpx.HTTPError, ValueError):
                gauges = {}
            row.update({short: gauges.get(short) for short in GAUGES.values()})
            counts = tally.counts
            row.update(sent=counts["sent"], answered=counts["answered"] + counts["answered_no_sample"])
            samples.append(row)
            return row

        async def sampler() -> None:
            last_report = started
            while not traffic_over.is_set():
                row = await sample("warm-up" if time.monotonic() - started < warm_at else "traffic")
                if time.monotonic() - last_report >= args.report_every:
                    last_report = time.monotonic()
                    log(f"{row['t'] / 60:6.1f} min: sent {row['sent']}, answered {row['answered']}, "
                        f"rss {row['rss_mb'] or 0:.1f} MB, queued {row['queued']}, rows {row['rows']}, "
                        f"in progress {row['in_progress']}")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(traffic_over.wait(), args.sample_every)

        watching = asyncio.create_task(sampler())
        await asyncio.gather(*(client_loop() for _ in range(args.concurrency)))
        traffic_seconds = time.monotonic() - started
        traffic_over.set()
        await watching
        await sample("traffic-end")
        # the server stops a hung-up request at its next step; wait for every gauge to reach 0
        drain_deadline = time.monotonic() + args.drain_timeout
        while True:
            row = await sample("drain")
            idle = all(row[k] == 0 for k in GAUGES.values() if row[k] is not None)
            if idle or time.monotonic() > drain_deadline:
                break
            await asyncio.sleep(0.5)
        final = await sample("end")
        try:
            after = await scrape(watcher)
            health_after = (await watcher.get("/health", timeout=30)).json()
        except (httpx.HTTPError, ValueError):
            after, health_after = {}, {}
    crashed = server is not None and not server.alive()
    exit_status = server.stop() if server is not None else None
    tracebacks = server.tracebacks() if server is not None else None
    summary = summarize(args, tally, samples, final, baseline, after, warm_at, traffic_seconds)
    summary.update(server_exit=exit_status, server_tracebacks=tracebacks, model=info.model, chat=info.chat,
                   wall_seconds=round(time.monotonic() - wall, 1), samples=samples, url=url, pid=pid,
                   requests=tally.records)
    # runs the worker stopped because their client had gone: at most the hang-ups (some finish first)
    if "cancelled" in health_after and "cancelled" in health_before:
        summary["server_stopped_runs"] = health_after["cancelled"] - health_before["cancelled"]
    if crashed:
        summary["problems"].append("the server process died during the soak")
    if tracebacks:
        summary["problems"].append(f"the server logged {tracebacks} traceback(s) (see {server.log_path})")
    if server is not None:
        if summary["problems"]:
            log(f"server log kept: {server.log_path}")
        else:
            server.cleanup()
    return summary


def summarize(args, tally: Tally, samples: list[dict], final: dict, baseline: dict, after: dict,
              warm_at: float, traffic_seconds: float) -> dict:
    c = tally.counts
    answered = c["answered"] + c["answered_no_sample"]
    lost = c["sent"] - answered - c["cancelled"] - c["rejected"]
    problems = []
    if lost:
        problems.append(f"{lost} request(s) lost: {c['failed']} failed, {c['unanswered']} unanswered")
    if tally.bad_refused != tally.bad_sent:
        problems.append(f"{tally.bad_sent - tally.bad_refused} bad bod(ies) not refused")
    left = {k: final.get(k) for k in GAUGES.values()}
    open_now = {k: v for k, v in left.items() if v}
    if open_now:
        problems.append(f"left open after draining: {open_now}")
    missing = [k for k, v in left.items() if v is None]
    outcomes = ("ok", "invalid", "rejected", "cancelled", "error")
    counted = None
    server_outcomes = {}
    if after and all(f"outcome:{o}" in after for o in outcomes):
        server_outcomes = {o: int(after[f"outcome:{o}"] - baseline.get(f"outcome:{o}", 0)) for o in outcomes}
        counted = sum(server_outcomes.values())
        errors = int(after["outcome:error"] - baseline.get("outcome:error", 0))
        if errors:
            problems.append(f"the server answered {errors} request(s) with a 5xx")
        if counted != c["sent"] and not args.url:  # another client may share a server given by --url
            problems.append(f"the server counted {counted} completion requests, {c['sent']} were sent")
    warm = next((s for s in samples if s["t"] >= warm_at and s["rss_mb"] is not None), None)
    window = [(s["t"], s["rss_mb"]) for s in samples
              if s["rss_mb"] is not None and warm_at <= s["t"] <= traffic_seconds + 1e-6]
    slope = slope_per_minute(window)
    window_minutes = (window[-1][0] - window[0][0]) / 60 if len(window) > 1 else 0.0
    judged = slope is not None and window_minutes >= args.judge_minutes
    if judged and slope > args.max_growth:
        problems.append(f"RSS grew {slope:+.2f} MB/min after the warm-up (tolerance {args.max_growth:g})")
    rss_values = [s["rss_mb"] for s in samples if s["rss_mb"] is not None]
    return {
        "sent": c["sent"], "answered": answered, "no_sample": c["answered_no_sample"], "cancelled": c["cancelled"],
        "rejected": c["rejected"], "lost": lost, "failed": c["failed"], "unanswered": c["unanswered"],
        "bad_sent": tally.bad_sent, "bad_refused": tally.bad_refused, "refusal_codes": dict(tally.refusals),
        "kinds": {k: dict(v) for k, v in sorted(tally.kinds.items())}, "reasons": dict(tally.reasons),
        "failures": [list(p) for p in tally.problems],
        "rss_warmup_mb": warm["rss_mb"] if warm else None, "rss_end_mb": final.get("rss_mb"),
        "rss_max_mb": max(rss_values) if rss_values else None,
        "rss_slope_mb_per_min": slope, "rss_window_min": round(window_minutes, 2), "growth_judged": judged,
        "max_growth": args.max_growth, "left_open": left, "gauges_missing": missing,
        "server_counted": counted, "server_outcomes": server_outcomes,
        "traffic_seconds": round(traffic_seconds, 1), "problems": problems,
    }


def summary_line(s: dict) -> str:
    if "setup_error" in s:
        return f"serve_soak: ERROR {s['setup_error']}"

    def mb(value):
        return "n/a" if value is None else f"{value:.1f}"

    left = s["left_open"]

    def gauge(*keys):
        values = [left[k] for k in keys if left.get(k) is not None]
        return "n/a" if not values else f"{int(sum(values))}"

    slope = "n/a" if s["rss_slope_mb_per_min"] is None else f"{s['rss_slope_mb_per_min']:+.2f}MB/min"
    verdict = "PASS" if not s["problems"] else "FAIL"
    judged = (f"tolerance {s['max_growth']:g}" if s["growth_judged"]
              else f"not judged, under {s['rss_window_min']:g} min" if s["rss_slope_mb_per_min"] is not None
              else "not judged")
    return (
        f"serve_soak: {verdict} sent={s['sent']} answered={s['answered']} cancelled={s['cancelled']} "
        f"rejected={s['rejected']} lost={s['lost']} (failed={s['failed']} unanswered={s['unanswered']}) "
        f"bad_bodies_refused={s['bad_refused']}/{s['bad_sent']} no_sample={s['no_sample']} | "
        f"rss_mb warmup_end={mb(s['rss_warmup_mb'])} end={mb(s['rss_end_mb'])} max={mb(s['rss_max_mb'])} "
        f"growth={slope} over {s['rss_window_min']:g} min ({judged}) | "
        f"left_open sessions={gauge('sessions')} rows={gauge('rows', 'session_rows')} "
        f"tickets={gauge('queued', 'running')} in_progress={gauge('in_progress')} | "
        f"server_counted={s['server_counted'] if s['server_counted'] is not None else 'n/a'} "
        f"tracebacks={s['server_tracebacks'] if s['server_tracebacks'] is not None else 'n/a'} | "
        f"traffic {s['traffic_seconds']:.0f} s, wall {s['wall_seconds']:.0f} s"
        + (f" | problems: {'; '.join(s['problems'])}" if s["problems"] else "")
    )


def write_out(path: str, summary: dict) -> None:
    target = Path(path)
    if target.suffix == ".csv":
        samples = summary.get("samples", [])
        with target.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(samples[0]) if samples else ["t"])
            writer.writeheader()
            writer.writerows(samples)
    else:
        target.write_text(json.dumps(summary, indent=1, default=str) + "\n")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="serve_soak.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The summary line goes to stdout, progress and failures to stderr.")
    parser.add_argument("--minutes", type=float, default=20.0,
                        help="how long clients keep starting requests (default 20); requests under way "
                             "then finish, and the first round, one request of each kind, always completes")
    parser.add_argument("--concurrency", type=int, default=4, help="clients sending at once (default 4)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the sequence of requests: kinds, bodies, hang-ups and the runs' own seeds "
                             "(default 0)")
    parser.add_argument("--url", default=None,
                        help="soak a running server at this URL instead of starting one "
                             "(its RSS is read from --pid, or from the process listening on the port)")
    parser.add_argument("--pid", type=int, default=None, help="with --url: the server's process id, for its RSS")
    parser.add_argument("--api-key", default=os.environ.get("AWRS_API_KEY") or None,
                        help="the server's API key, sent with every request (default: $AWRS_API_KEY, which a "
                             "started server reads too)")
    parser.add_argument("--model", default=None,
                        help="model for the started server (awrs serve --model; default: the embedded one)")
    parser.add_argument("--backend", default=None, choices=["auto", "hf", "llamacpp"],
                        help="backend for the started server (default: awrs serve's own default)")
    parser.add_argument("--server-cpus", default=None, metavar="LIST",
                        help="CPUs the started server may run on, e.g. '0' or '0,1' (Linux); llama.cpp takes "
                             "its thread count from them, and on a CPU busy with other work fewer threads "
                             "stall far less (default: every CPU this script may use)")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="one more argument for awrs serve, repeatable: --server-arg=--max-batch-particles=64")
    parser.add_argument("--server-log", default=None, metavar="FILE",
                        help="keep the started server's output here (default: a temporary file, kept when the "
                             "soak fails)")
    parser.add_argument("--warmup", type=float, default=None, metavar="MINUTES",
                        help="minutes of traffic before memory growth is measured (default: a fifth of "
                             "--minutes, at most 3)")
    parser.add_argument("--max-growth", type=float, default=2.0, metavar="MB_PER_MIN",
                        help="tolerated RSS growth after the warm-up: the slope of a least-squares line "
                             "through the samples, in MB per minute (default 2.0: on the embedded model the "
                             "RSS swings by about 25 MB as the allocator takes and returns memory, so the "
                             "slope over a 17-minute window varies by about 1 MB/min between runs; at about "
                             "60 requests a minute, 2 MB/min is some 35 KB kept per request)")
    parser.add_argument("--judge-minutes", type=float, default=10.0,
                        help="judge the growth only when the samples after the warm-up span at least this "
                             "many minutes; shorter runs report it without a verdict, since over a few "
                             "minutes the swings above give slopes of several MB/min (default 10)")
    parser.add_argument("--sample-every", type=float, default=5.0, metavar="SECONDS",
                        help="seconds between samples of RSS and the /metrics gauges (default 5)")
    parser.add_argument("--report-every", type=float, default=60.0, metavar="SECONDS",
                        help="seconds between progress lines on stderr (default 60)")
    parser.add_argument("--request-timeout", type=float, default=300.0, metavar="SECONDS",
                        help="a request with no complete answer after this long counts as unanswered "
                             "(default 300)")
    parser.add_argument("--drain-timeout", type=float, default=120.0, metavar="SECONDS",
                        help="after the traffic, how long to wait for the gauges to reach 0 (default 120)")
    parser.add_argument("--start-timeout", type=float, default=300.0, metavar="SECONDS",
                        help="how long to wait for a started server's /health (default 300)")
    parser.add_argument("--out", default=None, metavar="FILE",
                        help="write the samples there: FILE.csv gets the samples as CSV, any other name "
                             "JSON with the summary, the samples and the first failures")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.concurrency < 1 or args.sample_every <= 0:
        parser.error("--minutes and --sample-every must be positive and --concurrency at least 1")
    if args.warmup is None:
        args.warmup = min(3.0, args.minutes / 5)
    if args.pid is not None and not args.url:
        parser.error("--pid goes with --url")
    if args.server_cpus:
        try:
            args.server_cpus = {int(c) for c in args.server_cpus.split(",") if c.strip()}
        except ValueError:
            parser.error(f"--server-cpus takes CPU numbers separated by commas, got {args.server_cpus!r}")
    return args


def run(args: argparse.Namespace) -> dict:
    """The soak's summary (a dict); prints progress on stderr unless ``args.quiet``."""

    def log(message: str) -> None:
        if not args.quiet:
            print(f"serve_soak: {message}", file=sys.stderr, flush=True)

    summary = asyncio.run(soak(args, log))
    if args.out:
        write_out(args.out, summary)
    for outcome, index, kind, reason in summary.get("failures", [])[:10]:
        print(f"serve_soak: {outcome} request #{index} ({kind}): {reason}", file=sys.stderr)
    return summary


def main(argv=None) -> int:
    args = parse_args(argv)
    summary = run(args)
    print(summary_line(summary), flush=True)
    if "setup_error" in summary:
        return 2
    return 1 if summary["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
