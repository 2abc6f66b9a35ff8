"""The batching worker: one thread owns the model and runs queued requests together.

HTTP handlers put :class:`Ticket` objects in the queue and await their futures. The worker
repeatedly takes every pending ticket (oldest first, up to a cap on total particles), turns
prompts into token ids, and runs them all with :func:`awrs.generate_many`: different prompts,
constraints and particle counts advance in one batched model call per step. Each ticket's
future then gets its :class:`~awrs.Result` (or an :class:`~awrs.server.errors.ApiError`).
Tickets arriving while a batch runs wait for the next batch.

A ticket can be cancelled (its client went away): queued, it is dropped; running, its
``should_stop`` returns the reason and the SMC driver drops its particles at the next step.
If a batch fails as a whole, its requests are rerun one by one, so that only the request at
fault gets the error.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, ConstraintError, ModelError
from ..generate import generate_many
from ..models.base import LanguageModel
from ..result import Result
from .errors import ApiError
from .metrics import ServerMetrics

log = logging.getLogger("awrs.server")


@dataclass
class Ticket:
    """One request waiting for, or in, a batch.

    ``prompt`` is text, chat messages or token ids (``chat`` says to apply the chat template to
    text); ``options`` are :func:`awrs.generate` keyword arguments (particles, max_tokens,
    method, seed, ess_threshold, time_limit).
    """

    prompt: Any
    constraint: Any
    options: dict
    chat: bool = False
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    cancelled: str | None = None
    prompt_ids: list[int] | None = None
    enqueued: float = field(default_factory=time.monotonic)
    started: float | None = None  # its batch began
    first_step: float | None = None  # its first next-token distribution was ready
    on_step: Any = None  # called in the worker after every SMC step (streaming), if set

    @property
    def particles(self) -> int:
        return int(self.options.get("particles", 10))

    def cancel(self, reason: str) -> None:
        """Ask the worker to drop this request (it stops at the next step if running)."""
        if self.cancelled is None:
            self.cancelled = reason


@dataclass
class Outcome:
    """What a ticket's future resolves to."""

    result: Result
    prompt_tokens: int
    batch: dict


class Batcher:
    """Owns ``model``; runs queued tickets in batches on one worker thread.

    Args:
        model: the language model (used only from the worker thread once started).
        max_batch_particles: total particles of the tickets run together.
        max_pending: tickets queued at once; :meth:`submit` refuses more (429).
        max_prompt_tokens: longest prompt in tokens, or ``None``.
        batch_window: seconds to wait after an idle spell before starting a batch.
        metrics: where finished requests and batches are recorded (``/metrics``), if anywhere.
    """

    def __init__(
        self, model: LanguageModel, *, max_batch_particles: int = 256, max_pending: int = 1024,
        max_prompt_tokens: int | None = None, batch_window: float = 0.005, metrics: ServerMetrics | None = None,
    ) -> None:
        self.model = model
        self.metrics = metrics
        self.max_batch_particles = max_batch_particles
        self.max_pending = max_pending
        self.max_prompt_tokens = max_prompt_tokens
        self.batch_window = batch_window
        self._pending: collections.deque[Ticket] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._running: list[Ticket] = []
        self._mixed_prompts = type(model).open_many is not LanguageModel.open_many
        self.counters = {
            "batches": 0,
            "requests": 0,  # requests answered with a result
            "errors": 0,  # requests answered with an error
            "cancelled": 0,  # requests whose client went away (dropped queued, or stopped running)
            "max_requests_per_batch": 0,
            "max_particles_per_batch": 0,
            "particle_tokens": 0,
            "busy_seconds": 0.0,
        }
        self.last_batch: dict | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="awrs-batcher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker: queued tickets fail with 503, running ones are stopped early."""
        with self._cond:
            self._stopping = True
            pending = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        for ticket in pending:
            _resolve(ticket, error=ApiError(503, "the server is shutting down", code="shutting_down"))
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- queue ------------------------------------------------------------------------------

    def submit(self, ticket: Ticket) -> concurrent.futures.Future:
        if ticket.particles > self.max_batch_particles:  # validated before; never wait forever
            raise ApiError(400, f"particles {ticket.particles} exceeds the batch limit {self.max_batch_particles}",
                           param="particles", code="limit_exceeded")
        if not self.alive:
            self.start()
        with self._cond:
            if self._stopping:
                raise ApiError(503, "the server is shutting down", code="shutting_down")
            if len(self._pending) >= self.max_pending:
                raise ApiError(
                    429, f"too many queued requests ({self.max_pending}); retry later", code="queue_full"
                )
            self._pending.append(ticket)
            self._cond.notify_all()
        return ticket.future

    def snapshot(self) -> dict:
        with self._cond:
            out = dict(self.counters)
            out["pending"] = len(self._pending)
            out["running"] = len(self._running)
        out["busy_seconds"] = round(out["busy_seconds"], 3)
        out["last_batch"] = self.last_batch
        out["worker_alive"] = self.alive
        return out

    def load(self) -> dict:
        """Requests queued, requests running and their particles (the model's rows), now."""
        with self._cond:
            return {"pending": len(self._pending), "running": len(self._running),
                    "running_rows": sum(t.particles for t in self._running)}

    # -- worker -----------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                idle = not self._pending
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
            if idle and self.batch_window > 0:
                time.sleep(self.batch_window)  # let requests that arrive together run together
            try:
                batch = self._take()
                if batch:
                    self._run_batch(batch)
            except Exception as err:  # never leave a future unresolved, never kill the worker
                log.exception("batch failed unexpectedly")
                with self._cond:
                    batch = list(self._running)
                for ticket in batch:
                    _resolve(ticket, error=_server_error(err))
            finally:
                with self._cond:
                    self._running = []

    def _take(self) -> list[Ticket]:
        """Pop the oldest tickets that fit under the particle cap, tokenized, others requeued."""
        batch: list[Ticket] = []
        total = 0
        with self._cond:
            while self._pending and total + self._pending[0].particles <= self.max_batch_particles:
                ticket = self._pending.popleft()
                if ticket.cancelled is not None:
                    self.counters["cancelled"] += 1
                    _resolve(ticket, error=ApiError(499, ticket.cancelled, code="cancelled"))
                    continue
                batch.append(ticket)
                total += ticket.particles
        ready = []
        for ticket in batch:
            try:
                self._tokenize(ticket)
            except ApiError as err:
                self._count_error()
                _resolve(ticket, error=err)
                continue
            ready.append(ticket)
        if not self._mixed_prompts and ready:
            # the backend cannot batch different prompts: run the first prompt's tickets now
            first = ready[0].prompt_ids
            later = [t for t in ready if t.prompt_ids != first]
            ready = [t for t in ready if t.prompt_ids == first]
            with self._cond:
                self._pending.extendleft(reversed(later))
        with self._cond:
            self._running = list(ready)
        return ready

    def _tokenize(self, ticket: Ticket) -> None:
        model = self.model
        try:
            ids = model.prompt_ids(ticket.prompt, chat=ticket.chat)
        except NotImplementedError as err:
            raise ApiError(400, f"{err}; use /v1/completions", code="no_chat_template") from None
        except (ValueError, TypeError, ModelError, ConfigError) as err:
            raise ApiError(400, f"cannot tokenize the prompt: {err}", param="prompt", code="invalid_prompt") from None
        except Exception as err:
            log.exception("tokenization failed")
            raise _server_error(err) from None
        if self.max_prompt_tokens is not None and len(ids) > self.max_prompt_tokens:
            raise ApiError(
                400, f"the prompt has {len(ids)} tokens; this server allows at most {self.max_prompt_tokens}",
                param="prompt", code="limit_exceeded",
            )
        context = getattr(model, "max_context", 0) or 0
        needed = len(ids) + int(ticket.options.get("max_tokens", 64)) + 1
        if context and needed > context:
            raise ApiError(
                400, f"the prompt ({len(ids)} tokens) plus max_tokens exceeds the model's context of {context} tokens",
                param="max_tokens", code="context_length_exceeded",
            )
        ticket.prompt_ids = ids

    def _should_stop(self, ticket: Ticket):
        def stop() -> str | None:  # called once per step, the first time with its first distribution
            if ticket.first_step is None:
                ticket.first_step = time.monotonic()
            if ticket.cancelled is not None:
                return ticket.cancelled
            if self._stopping:
                return "the server is shutting down"
            return None

        return stop

    def _requests(self, tickets: Sequence[Ticket]) -> list[dict]:
        return [
            dict(ticket.options, prompt=ticket.prompt_ids, constraint=ticket.constraint,
                 should_stop=self._should_stop(ticket), on_step=ticket.on_step)
            for ticket in tickets
        ]

    def _run_batch(self, batch: list[Ticket]) -> None:
        number = self.counters["batches"] + 1
        info = {"id": number, "requests": len(batch), "particles": sum(t.particles for t in batch)}
        started = time.perf_counter()
        for ticket in batch:
            ticket.started = time.monotonic()
        try:
            results: list[Result | BaseException] = list(generate_many(self.model, self._requests(batch)))
        except Exception as err:  # noqa: BLE001 -- isolated below, request by request
            if len(batch) == 1:
                results = [err]
            else:  # find the request at fault: run each alone
                log.warning("a batch of %d requests failed (%s); rerunning them one by one", len(batch), err)
                results = []
                for ticket in batch:
                    try:
                        results.append(generate_many(self.model, self._requests([ticket]))[0])
                    except Exception as single:  # noqa: BLE001 -- becomes this request's error
                        results.append(single)
        seconds = time.perf_counter() - started
        tokens = sum(r.stats.tokens for r in results if isinstance(r, Result))
        with self._cond:
            c = self.counters
            c["batches"] = number
            c["max_requests_per_batch"] = max(c["max_requests_per_batch"], len(batch))
            c["max_particles_per_batch"] = max(c["max_particles_per_batch"], info["particles"])
            c["particle_tokens"] += tokens
            c["busy_seconds"] += seconds
            self.last_batch = dict(info, seconds=round(seconds, 4), particle_tokens=tokens)
        if self.metrics is not None:
            self.metrics.observe_batch(seconds, tokens)
        for ticket, result in zip(batch, results):
            with self._cond:
                if ticket.cancelled is not None:
                    self.counters["cancelled"] += 1
                elif isinstance(result, Result):
                    self.counters["requests"] += 1
                else:
                    self.counters["errors"] += 1
            if isinstance(result, Result):
                if self.metrics is not None:
                    self._record(ticket, result)
                _resolve(ticket, outcome=Outcome(result, len(ticket.prompt_ids or ()), dict(info)))
            else:
                _resolve(ticket, error=_as_api_error(result))

    def _record(self, ticket: Ticket, result: Result) -> None:
        now = time.monotonic()
        first = None if ticket.first_step is None else ticket.first_step - ticket.enqueued
        self.metrics.observe_result(result, waited=(ticket.started or now) - ticket.enqueued, first_token=first,
                                    total=now - ticket.enqueued)

    def _count_error(self) -> None:
        with self._cond:
            self.counters["errors"] += 1


def _resolve(ticket: Ticket, *, outcome: Outcome | None = None, error: BaseException | None = None) -> None:
    future = ticket.future
    if future.done():
        return
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(outcome)
    except concurrent.futures.InvalidStateError:  # resolved concurrently (cancelled): nothing to do
        pass


def _as_api_error(err: BaseException) -> ApiError:
    if isinstance(err, ApiError):
        return err
    if isinstance(err, ConfigError):
        return ApiError(400, str(err), code="invalid_request")
    if isinstance(err, ModelError):
        return ApiError(400, str(err), code="model_error")
    if isinstance(err, ConstraintError):
        return ApiError(500, f"the constraint failed: {err}", code="constraint_error")
    return _server_error(err)


def _server_error(err: BaseException) -> ApiError:
    return ApiError(500, f"internal error while generating: {type(err).__name__}: {err}", code="internal_error")
