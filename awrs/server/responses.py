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


async def replay(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def choice(c: dict, index: int, chat: bool) -> dict:
    if chat:
        return {"index": index, "message": {"role": "assistant", "content": c["text"]},
                "finish_reason": c["finish_reason"], "logprobs": None, "probability": c["probability"]}
    return {"index": index, "text": c["text"], "finish_reason": c["finish_reason"], "logprobs": None,
            "probability": c["probability"]}


def sse(obj, event: str | None = None) -> bytes:
    """One server-sent event (``event:`` named only for awrs's own events)."""
    name = f"event: {event}\n".encode() if event else b""
    return name + b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"


DONE = b"data: [DONE]\n\n"


class Chunks:
    """OpenAI stream chunks of one response: ``head`` is its id, creation time and model."""

    def __init__(self, head: dict, *, chat: bool, include_usage: bool) -> None:
        self.head, self.chat, self.include_usage = head, chat, include_usage
        self.kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(self, index: int, text: str | None, finish: str | None = None, **more) -> bytes:
        """Text for choice ``index`` (``None``: the chat role chunk), or its finish reason."""
        extra = {"usage": None} if self.include_usage else {}
        if self.chat:
            if finish is not None:
                delta = {}
            else:
                delta = {"role": "assistant", "content": ""} if text is None else {"content": text}
            choice = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": index, "text": text or "", "finish_reason": finish, "logprobs": None}
        return sse(dict(self.head, object=self.kind, choices=[choice], **extra, **more))

    def usage(self, usage: dict) -> list[bytes]:
        return [sse(dict(self.head, object=self.kind, choices=[], usage=usage))] if self.include_usage else []


def stream_chunks(head: dict, choices: list[dict], usage: dict, ext: dict, *, chat: bool,
                  include_usage: bool) -> list[bytes]:
    """The whole answer as OpenAI chunks: per choice, role, text, finish; then usage; [DONE]."""
    chunks = Chunks(head, chat=chat, include_usage=include_usage)
    out = []
    for k, c in enumerate(choices):
        if chat:
            out.append(chunks.chunk(k, None))
        out.append(chunks.chunk(k, c["text"]))
        more = {"awrs": ext} if k == len(choices) - 1 else {}
        out.append(chunks.chunk(k, "", c["finish_reason"], **more))
    return out + chunks.usage(usage) + [DONE]
