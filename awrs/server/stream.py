"""Live streaming: the text SMC can no longer change, sent while it runs.

The worker thread calls :meth:`LiveRun.on_step` after every SMC step of a request. It works out
the text every weight-carrying particle shares (:class:`awrs.smc.streaming.SettledText`), which
begins every text the run can still return, and posts its growth to the event loop. The
response (:func:`live_chunks`) sends each growth as an OpenAI chunk of choice 0 and, at the
end, the rest of choice 0 and the other choices whole: the deltas of a choice concatenate to
its final text, and nothing sent is ever taken back. With ``stream_options.awrs_events`` each
step is also sent as an ``event: awrs`` server-sent event (particles, weights, ESS,
resampling), which OpenAI clients do not expect: it is for tools and the playground.

If the run ends without a sample after text was sent (every particle died), the stream ends
with an error event instead of a finish reason: what was sent stays true of every particle
that lived, but no text was found.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from ..smc.streaming import SettledText, step_event
from ..vocab import Vocabulary
from .batcher import Outcome, Ticket
from .errors import ApiError, error_body
from .responses import DONE, Chunks, sse


class LiveRun:
    """Step reports of one request, from the worker thread to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, vocab: Vocabulary, *, events: bool) -> None:
        self._loop = loop
        self._vocab = vocab
        self._events = events
        self._settled = SettledText(vocab)
        self._queue: asyncio.Queue = asyncio.Queue()
        self._steps = 0

    @property
    def text(self) -> str:
        """Everything settled so far (sent, or about to be)."""
        return self._settled.text

    def on_step(self, particles) -> None:
        """Worker thread: after a step, post its settled growth and, if asked, its event."""
        self._steps += 1
        delta = self._settled.update(particles)
        event = step_event(particles, self._vocab, self._steps) if self._events else None
        if delta or event is not None:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (delta, event))

    async def wait(self, future: asyncio.Future, timeout: float | None = None) -> list[tuple[str, dict | None]]:
        """Reports posted so far; waits (up to ``timeout``) for one or for the run's end."""
        items = []
        if self._queue.empty() and not future.done():
            getter = asyncio.ensure_future(self._queue.get())
            try:
                await asyncio.wait({getter, future}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if getter.done():
                    items.append(getter.result())  # the oldest report: first in line
                else:
                    getter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await getter
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        return items

    def pending(self) -> bool:
        return not self._queue.empty()


async def live_chunks(
    live: LiveRun, first: list, future: asyncio.Future, ticket: Ticket, chunks: Chunks,
    finish: Callable[[Outcome], tuple[list[dict], dict, dict]],
) -> AsyncIterator[bytes]:
    """The response body: settled text while the run goes on, then the rest and [DONE]."""
    try:
        if chunks.chat:
            yield chunks.chunk(0, None)
        items = first
        while True:
            for delta, event in items:
                if event is not None:
                    yield sse(event, "awrs")
                if delta:
                    yield chunks.chunk(0, delta)
            if future.done() and not live.pending():
                break
            items = await live.wait(future)
        try:
            outcome = future.result()
        except ApiError as err:  # after text was sent: the error ends the stream
            yield sse(err.body())
            yield DONE
            return
        choices, usage, ext = finish(outcome)
        final = choices[0]
        if outcome.result.posterior and final["text"].startswith(live.text):
            rest = final["text"][len(live.text):]
            if rest:
                yield chunks.chunk(0, rest)
        elif live.text:  # no sample after all (every particle died): nothing to finish
            message = outcome.result.message or "no sample satisfies the constraint"
            yield sse(dict(error_body(message, "no_sample", None, "no_sample"), awrs=ext))
            yield DONE
            return
        else:
            yield chunks.chunk(0, final["text"])
        for k, c in enumerate(choices):
            if k:
                if chunks.chat:
                    yield chunks.chunk(k, None)
                yield chunks.chunk(k, c["text"])
            more = {"awrs": ext} if k == len(choices) - 1 else {}
            yield chunks.chunk(k, "", c["finish_reason"], **more)
        for piece in chunks.usage(usage):
            yield piece
        yield DONE
    finally:
        if not future.done():  # the client went away mid-stream
            ticket.cancel("the client disconnected")
            future.cancel()
