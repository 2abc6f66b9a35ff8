"""The batching worker: one thread owns the model and runs requests together, continuously.

HTTP handlers put :class:`Ticket` objects in the queue and await their futures. The worker
runs one SMC session (:class:`awrs.smc.Driver`) for every running request and, before each
model step, admits the pending tickets that fit under the particle cap (oldest first): their
prompts are tokenized and evaluated (a long one a chunk per step: chunked prefill) and their
rows join the session, so a request starts at the next step instead of waiting for the
running ones to end (continuous batching). Requests
with different prompts, constraints and particle counts advance in one batched model call
per step; a finished request leaves at once and its future gets its :class:`~awrs.Result`
(or an :class:`~awrs.server.errors.ApiError`). The session closes when nothing runs.

A ticket can be cancelled (its client went away): queued, it is dropped; running, its
``should_stop`` returns the reason and its particles are dropped at the next step. A request
that cannot be prepared gets its own error; if a model step fails, every running request
gets the error and the session is dropped. ``rejection`` requests (whose attempts start over)
run alone between steps.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, ModelError
from ..generate import prepare
from ..models.base import LanguageModel, RowsNotExtendable
from ..result import Result
from ..smc import Driver
from .errors import ApiError, as_api_error, server_error
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
        # the model's own limits bound a batch too (llama.cpp: n_seq_max rows, n_ctx cells)
        self.max_batch_particles = min(max_batch_particles, getattr(model, "max_rows", None) or max_batch_particles)
        self.max_cells = getattr(model, "max_cells", None)
        self.max_pending = max_pending
        self.max_prompt_tokens = max_prompt_tokens
        self.batch_window = batch_window
        self._pending: collections.deque[Ticket] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._running: list[Ticket] = []
        self._driver: Driver | None = None  # the running session, when requests are running
        self._session: dict = {}
        self._tickets: dict[int, tuple[Ticket, object]] = {}  # id(job) -> (ticket, prepared request)
        # rows the open session holds in the model, as of the worker's last step: kept here so that
        # a scrape never reads the driver while the worker changes it
        self._session_rows = 0
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
        """Requests queued, requests running and their particles (the model's rows), now; and
        the decoding sessions open (0 or 1) with the rows they hold, as of the last step."""
        with self._cond:
            out = {"pending": len(self._pending), "running": len(self._running),
                   "running_rows": sum(t.particles for t in self._running)}
        out["sessions"] = int(self._driver is not None)
        out["session_rows"] = self._session_rows
        return out

    # -- worker -----------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                idle = not self._pending and not self._running
                while not self._pending and not self._running and not self._stopping:
                    self._cond.wait()
                stopping = self._stopping
            if stopping:  # running requests stop at one more step (should_stop) with what they have
                try:
                    if self._driver is not None and self._driver.busy:
                        self._finish(self._driver.step())
                finally:
                    self._abandon(ApiError(503, "the server is shutting down", code="shutting_down"))
                return
            if idle and self.batch_window > 0:
                time.sleep(self.batch_window)  # let requests that arrive together start together
            try:
                self._admit()
                if self._driver is not None and self._driver.busy:
                    self._finish(self._driver.step())
            except Exception as err:  # never leave a future unresolved, never kill the worker
                log.exception("a step failed")
                self._abandon(as_api_error(err))
            if self._driver is not None and not self._driver.busy:
                self._close_session()
            self._session_rows = self._driver.rows if self._driver is not None else 0

    def _admit(self) -> None:
        """Pending tickets that fit under the particle cap join the running session now."""
        while True:
            with self._cond:
                free = self.max_batch_particles - sum(t.particles for t in self._running)
                if not self._pending or self._pending[0].particles > free:
                    return
                ticket = self._pending.popleft()
                if ticket.cancelled is not None:
                    self.counters["cancelled"] += 1
                    _resolve(ticket, error=ApiError(499, ticket.cancelled, code="cancelled"))
                    continue
            try:
                if ticket.prompt_ids is None:  # a ticket put back to wait for room keeps its ids
                    self._tokenize(ticket)
            except Exception as err:  # noqa: BLE001 -- this request's error, not the server's
                self._count_error()
                _resolve(ticket, error=as_api_error(err))
                continue
            if not self._cells_fit(ticket):
                with self._cond:
                    if self._running:  # wait for running requests to free their cells
                        self._pending.appendleft(ticket)
                        return
                self._count_error()
                _resolve(ticket, error=ApiError(
                    400, f"the prompt and {ticket.particles} particles of max_tokens need more than the "
                    f"model's {self.max_cells} KV cells", param="max_tokens", code="context_length_exceeded"))
                continue
            try:
                prepared = prepare(self.model, self._request(ticket))
            except Exception as err:  # noqa: BLE001 -- this request's error, not the server's
                self._count_error()
                _resolve(ticket, error=as_api_error(err))
                continue
            ticket.started = time.monotonic()
            if prepared.method == "rejection":  # attempts start over: not a session's rows
                self._run_alone(ticket, prepared)
                continue
            if self._driver is None:
                self._driver = Driver(self.model)
                self._session = {"id": self.counters["batches"] + 1, "requests": 0, "particles": 0,
                                 "steps": 0, "started": time.perf_counter(), "tokens": 0}
                self.counters["batches"] += 1
            try:
                self._driver.join(prepared.job)
            except RowsNotExtendable:  # this backend batches only requests that start together
                with self._cond:
                    self._pending.appendleft(ticket)
                return
            except ModelError as err:
                self._count_error()
                _resolve(ticket, error=as_api_error(err))
                continue
            self._tickets[id(prepared.job)] = (ticket, prepared)
            session = self._session
            session["requests"] += 1
            with self._cond:
                self._running.append(ticket)
                rows = sum(t.particles for t in self._running)
                c = self.counters
                c["max_requests_per_batch"] = max(c["max_requests_per_batch"], len(self._running))
                c["max_particles_per_batch"] = max(c["max_particles_per_batch"], rows)
            session["particles"] = max(session["particles"], rows)

    def _cells(self, ticket: Ticket) -> int:
        """KV cells a request may fill: its prompt once, and every particle's tokens."""
        return len(ticket.prompt_ids or ()) + ticket.particles * (int(ticket.options.get("max_tokens", 64)) + 1)

    def _cells_fit(self, ticket: Ticket) -> bool:
        if self.max_cells is None:
            return True
        with self._cond:
            used = sum(self._cells(t) for t in self._running)
        return used + self._cells(ticket) <= self.max_cells

    def _finish(self, runs) -> None:
        """Answer the tickets whose runs just finished."""
        self._session["steps"] += 1
        for run in runs:
            ticket, prepared = self._tickets.pop(id(run.job))
            with self._cond:
                self._running.remove(ticket)
            if run.error is not None:  # this request's constraint failed; the others go on
                self._answer(ticket, error=run.error)
                continue
            try:
                result = prepared.result(self.model, run.particles)
            except Exception as err:  # noqa: BLE001 -- packaging failed for this request only
                self._answer(ticket, error=err)
                continue
            self._session["tokens"] += result.stats.tokens
            info = {k: self._session[k] for k in ("id", "requests", "particles")}
            self._answer(ticket, result=result, info=info)

    def _run_alone(self, ticket: Ticket, prepared) -> None:
        with self._cond:
            self._running.append(ticket)
        try:
            result = prepared.result(self.model)
        except Exception as err:  # noqa: BLE001 -- this request's error
            result = err
        finally:
            with self._cond:
                self._running.remove(ticket)
        self.counters["batches"] += 1
        info = {"id": self.counters["batches"], "requests": 1, "particles": ticket.particles}
        if isinstance(result, Result):
            self._answer(ticket, result=result, info=info)
        else:
            self._answer(ticket, error=result)

    def _answer(self, ticket: Ticket, *, result: Result | None = None, error: BaseException | None = None,
                info: dict | None = None) -> None:
        with self._cond:
            if ticket.cancelled is not None:
                self.counters["cancelled"] += 1
            elif result is not None:
                self.counters["requests"] += 1
                self.counters["particle_tokens"] += result.stats.tokens
            else:
                self.counters["errors"] += 1
        if result is None:
            _resolve(ticket, error=as_api_error(error))
            return
        if self.metrics is not None:
            self._record(ticket, result)
        _resolve(ticket, outcome=Outcome(result, len(ticket.prompt_ids or ()), dict(info or {})))

    def _close_session(self) -> None:
        session = self._session
        self._driver.close()
        self._driver = None
        seconds = time.perf_counter() - session["started"]
        with self._cond:
            self.counters["busy_seconds"] += seconds
            self.last_batch = {"id": session["id"], "requests": session["requests"],
                               "particles": session["particles"], "steps": session["steps"],
                               "seconds": round(seconds, 4), "particle_tokens": session["tokens"]}
        if self.metrics is not None:
            self.metrics.observe_batch(seconds, session["tokens"])

    def _abandon(self, error: ApiError) -> None:
        """The session failed (or the server stops): every running ticket gets ``error``."""
        with self._cond:
            running = list(self._running)
            self._running = []
        for ticket in running:
            self._count_error()
            _resolve(ticket, error=error)
        self._tickets.clear()
        if self._driver is not None:
            try:
                self._driver.close()
            except Exception:  # noqa: BLE001 -- already failing; the session is dropped either way
                log.exception("closing a failed session")
            self._driver = None

    def _request(self, ticket: Ticket) -> dict:
        return dict(ticket.options, prompt=ticket.prompt_ids, constraint=ticket.constraint,
                    should_stop=self._should_stop(ticket), on_step=ticket.on_step)

    def _tokenize(self, ticket: Ticket) -> None:
        model = self.model
        messages = isinstance(ticket.prompt, list) and bool(ticket.prompt) and isinstance(ticket.prompt[0], dict)
        if (ticket.chat or messages) and not model.has_chat_template:
            raise ApiError(400, f"{model.name} has no chat template (a base model); send a text prompt to "
                                "/v1/completions", code="no_chat_template")
        try:
            ids = model.prompt_ids(ticket.prompt, chat=ticket.chat)
        except (ValueError, TypeError, ModelError, ConfigError) as err:
            raise ApiError(400, f"cannot tokenize the prompt: {err}", param="prompt", code="invalid_prompt") from None
        except Exception as err:
            log.exception("tokenization failed")
            raise server_error(err) from None
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
