"""The server's OpenAPI document, served at ``/openapi.json``.

Handlers read their bodies themselves (to bound their size and answer every error in OpenAI's
shape), so FastAPI cannot see the request models; they are added here from the pydantic
models in :mod:`.schemas`, with OpenAI's error body for every 4xx and 5xx answer. Fuzzers
(schemathesis in the test suite) and client generators read this document.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .schemas import ChatCompletionRequest, CompletionRequest

REF = "#/components/schemas/{model}"

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["message", "type", "param", "code"],
        "properties": {
            "message": {"type": "string"},
            "type": {"type": "string"},
            "param": {"type": ["string", "null"]},
            "code": {"type": ["string", "null"]},
        },
    }},
}

BODIES = {"/v1/chat/completions": ChatCompletionRequest, "/v1/completions": CompletionRequest}


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` describe the request bodies and the error shape."""

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = get_openapi(title=app.title, version=app.version, routes=app.routes,
                               description="OpenAI-compatible constrained generation (awrs)")
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas["Error"] = ERROR
        error = {"description": "an error in OpenAI's shape",
                 "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        for path, model in BODIES.items():
            body = model.model_json_schema(ref_template=REF, by_alias=True)
            schemas.update(body.pop("$defs", {}))
            schemas[model.__name__] = body
            operation = document["paths"][path]["post"]
            operation["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
            operation["responses"] = {
                "200": {"description": "the completion (JSON), or server-sent events with stream: true",
                        "content": {"application/json": {"schema": {"type": "object"}},
                                    "text/event-stream": {"schema": {"type": "string"}}}},
                "4XX": error,
                "5XX": error,
            }
        app.openapi_schema = document
        return document

    app.openapi = openapi
