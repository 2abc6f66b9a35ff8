"""Request bodies of the OpenAI-compatible endpoints (pydantic models) and their validation.

Unknown fields are errors (a misspelt ``guided_regx`` must not silently generate without a
constraint). OpenAI fields that would change the sampled distribution (``temperature``,
``top_p``, penalties, ``logit_bias``, ``stop``) or that awrs does not produce (``logprobs``,
``echo``...) are accepted only at their neutral values, so that clients which always send
them (``temperature: 1``) still work.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ApiError, bad_request


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class JsonSchemaFormat(_Strict):
    name: str | None = None
    description: str | None = None
    schema_: dict | bool | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(_Strict):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None
    awrs_events: bool | None = None  # per-step particle events (``event: awrs``), for tools


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    # Messages echoed back from a previous response may carry null fields (tool_calls, refusal...).
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class _Common(_Strict):
    """Fields both endpoints share: OpenAI's, vLLM's guided decoding, and awrs's own."""

    model: str | None = None
    max_tokens: int | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    user: str | None = None
    response_format: ResponseFormat | None = None
    # vLLM's names for constrained decoding
    guided_regex: str | None = None
    guided_json: dict | bool | str | None = None
    guided_grammar: str | None = None
    guided_choice: list[str] | None = None
    guided_whitespace_pattern: str | None = None
    # awrs's own options
    particles: int | None = None
    method: str | None = None
    ess_threshold: float | None = None
    budget_twist: str | None = None
    resample_power: float | None = None
    complete_power: float | None = None
    commit_share: float | None = None
    commit_lag: int | None = None
    masks: str | None = None
    time_limit: float | None = None
    # OpenAI sampling fields, accepted at their neutral values only
    temperature: float | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    stop: str | list[str] | None = None

    @field_validator("n", "stream", mode="before")
    @classmethod
    def _null_is_default(cls, value, info):
        """OpenAI accepts ``null`` for these; it means the default."""
        if value is None:
            return {"n": 1, "stream": False}[info.field_name]
        return value


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None


class CompletionRequest(_Common):
    prompt: str | list[int] | list[str] | list[list[int]]
    logprobs: int | None = None
    echo: bool | None = None
    best_of: int | None = None
    suffix: str | None = None


NEUTRAL = {
    "temperature": (None, 1.0),
    "top_p": (None, 1.0),
    "presence_penalty": (None, 0.0),
    "frequency_penalty": (None, 0.0),
    "echo": (None, False),
    "suffix": (None,),
    "best_of": (None, 1),
    "top_logprobs": (None, 0),
    "guided_whitespace_pattern": (None,),
}


def parse_body(raw: bytes, model_cls: type[_Common]) -> _Common:
    """Decode and validate a JSON body; every problem becomes a 400 ApiError."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise bad_request(f"the request body is not valid JSON: {err}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request("the request body must be a JSON object", code="invalid_json")
    try:
        request = model_cls.model_validate(data)
    except ValidationError as err:
        raise _from_validation(err) from None
    _check_neutral(request)
    return request


def _from_validation(err: ValidationError) -> ApiError:
    first = err.errors(include_url=False)[0]
    loc = [str(part) for part in first.get("loc", ())]
    # a union reports one error per member; the field path is what matters
    param = ".".join(p for p in loc if not _is_type_tag(p)) or None
    if first.get("type") == "extra_forbidden":
        return bad_request(f"unknown field {param!r}", param=param, code="unknown_field")
    if first.get("type") == "missing":
        return bad_request(f"missing required field {param!r}", param=param, code="missing_field")
    return bad_request(f"invalid value for {param!r}: {first.get('msg')}", param=param, code="invalid_value")


def _is_type_tag(part: str) -> bool:
    return part in {"str", "int", "bool", "float", "dict", "list[int]", "list[str]", "list[list[int]]",
                    "list[ContentPart]", "function-after"} or part.startswith(("list[", "dict["))


def _check_neutral(request: _Common) -> None:
    for name, allowed in NEUTRAL.items():
        if name in type(request).model_fields:
            value = getattr(request, name)
            if value not in allowed:
                raise bad_request(
                    f"{name}={value!r} is not supported: awrs samples the model's own distribution "
                    f"conditioned on the constraint (leave {name} out or send {allowed[-1]!r})",
                    param=name, code="unsupported_parameter",
                )
    if request.logit_bias:
        raise bad_request("logit_bias is not supported", param="logit_bias", code="unsupported_parameter")
    if request.stop not in (None, [], ""):
        raise bad_request(
            "stop sequences are not supported; express the end of the text in the constraint "
            "(guided_regex)", param="stop", code="unsupported_parameter",
        )
    if getattr(request, "logprobs", None) not in (None, False, 0):
        raise bad_request("logprobs are not returned by awrs; the posterior is in the 'awrs' field",
                          param="logprobs", code="unsupported_parameter")


def message_dicts(messages: list[ChatMessage]) -> list[dict]:
    """Chat messages as ``{"role", "content"}`` dicts for the model's chat template."""
    out = []
    for k, message in enumerate(messages):
        extra = {key: v for key, v in (message.model_extra or {}).items() if v not in (None, [], {})}
        if extra:
            raise bad_request(
                f"messages[{k}] has unsupported fields {sorted(extra)}", param=f"messages.{k}",
                code="unsupported_parameter",
            )
        content = message.content
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if part.type != "text" or part.text is None:
                    raise bad_request(
                        f"messages[{k}].content[{j}] has type {part.type!r}; only text parts are supported",
                        param=f"messages.{k}.content.{j}", code="unsupported_parameter",
                    )
                texts.append(part.text)
            content = "".join(texts)
        role = "system" if message.role == "developer" else message.role
        out.append({"role": role, "content": content or ""})
    if not out:
        raise bad_request("messages must not be empty", param="messages", code="invalid_value")
    return out
