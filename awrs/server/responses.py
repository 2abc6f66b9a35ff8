"""OpenAI's response shapes for a finished request: the choices (the posterior's most probable
texts), the ``awrs`` extension field, usage, and the answer replayed as server-sent chunks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from .batcher import Outcome


def choices_of(outcome: Outcome, n: int, max_tokens: int, eos_ids: frozenset) -> list[dict]:
    """The ``n`` most probable texts: ``{"text", "probability", "finish_reason", "tokens"}``."""
    result = outcome.result
    out = []
    for text, probability in list(result.posterior.items())[:n]:
        sample = next((s for s in result.samples if s.text == text and s.valid), None)
        ids = sample.token_ids if sample is not None else ()
        tokens = len(ids) - (1 if ids and ids[-1] in eos_ids else 0)
        finish = "length" if tokens >= max_tokens else "stop"
        out.append({"text": text, "probability": probability, "finish_reason": finish, "tokens": tokens})
    if not out:
        out.append({"text": "", "probability": None, "finish_reason": "length", "tokens": 0})
    return out


def extension(outcome: Outcome, options: dict, constraint) -> dict:
    ext = outcome.result.to_json()
    ext.pop("eos_token_ids", None)
    ext["particles"] = options["particles"]
    ext["max_tokens"] = options["max_tokens"]
    ext["constraint"] = constraint.describe()
    ext["batch"] = outcome.batch
    return ext


def usage_of(outcome: Outcome, choices: list[dict]) -> dict:
    completion = sum(c["tokens"] for c in choices)
    return {
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": outcome.prompt_tokens + completion,
    }


def _sse(obj) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"


async def replay(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def choice(c: dict, index: int, chat: bool) -> dict:
    if chat:
        return {"index": index, "message": {"role": "assistant", "content": c["text"]},
                "finish_reason": c["finish_reason"], "logprobs": None, "probability": c["probability"]}
    return {"index": index, "text": c["text"], "finish_reason": c["finish_reason"], "logprobs": None,
            "probability": c["probability"]}


def stream_chunks(head: dict, choices: list[dict], usage: dict, ext: dict, *, chat: bool,
                   include_usage: bool) -> list[bytes]:
    """The whole answer as OpenAI chunks: per choice, role, text, finish; then usage; [DONE]."""
    kind = "chat.completion.chunk" if chat else "text_completion"
    extra = {"usage": None} if include_usage else {}

    def chunk(index: int, delta_or_text, finish, **more) -> bytes:
        if chat:
            choice = {"index": index, "delta": delta_or_text, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": index, "text": delta_or_text, "finish_reason": finish, "logprobs": None}
        return _sse(dict(head, object=kind, choices=[choice], **extra, **more))

    out = []
    for k, c in enumerate(choices):
        if chat:
            out.append(chunk(k, {"role": "assistant", "content": ""}, None))
            out.append(chunk(k, {"content": c["text"]}, None))
        else:
            out.append(chunk(k, c["text"], None))
        last = k == len(choices) - 1
        more = {"awrs": ext} if last else {}
        out.append(chunk(k, {} if chat else "", c["finish_reason"], **more))
    if include_usage:
        out.append(_sse(dict(head, object=kind, choices=[], usage=usage)))
    out.append(b"data: [DONE]\n\n")
    return out
