"""Hostile input: schemathesis generates requests from the server's OpenAPI document.

Bodies that follow the schema and bodies that break it, on both completion endpoints and the
others, against the toy model: no answer is a 5xx, every error has OpenAI's shape, and every
request ends (a time limit per request bounds runs; pytest's own timeout is the outer bound).
The number of examples is fixed and the generation is seeded (derandomized), so the run is
the same every time.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings

from awrs.server import create_app
from awrs.server.testing import ToyChatModel

LIMITS = {"max_tokens": 32, "max_particles": 8, "max_n": 4, "max_body_bytes": 20_000, "max_seconds": 5.0,
          "max_batch_particles": 32}

APP = create_app(ToyChatModel(), limits=LIMITS)
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP)
# bodies that follow the schema, and bodies that break it (wrong types, missing fields...)
SCHEMA.config.generation.update(modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])


@SCHEMA.parametrize()
@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case):
    response = case.call(timeout=60)
    assert response.status_code < 500, (case.body, response.text[:300])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"], response.text
    elif case.path.endswith("completions"):
        if "text/event-stream" in str(response.headers.get("content-type")):
            assert response.text.rstrip().endswith("data: [DONE]"), response.text[-300:]
        else:
            assert "choices" in response.json() and "awrs" in response.json()


def test_the_openapi_document_describes_the_bodies():
    from fastapi.testclient import TestClient

    with TestClient(APP) as client:
        document = client.get("/openapi.json").json()
    body = document["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"].endswith("/ChatCompletionRequest")
    fields = document["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert {"messages", "guided_regex", "particles", "response_format"} <= set(fields)
    assert json.dumps(document)  # plain JSON
