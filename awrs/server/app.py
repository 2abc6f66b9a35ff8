"""The OpenAI-compatible HTTP API: ``create_app(model, limits=...)`` and ``serve(...)``.

Endpoints: ``POST /v1/completions``, ``POST /v1/chat/completions``, ``GET /v1/models``,
``GET /health``, ``GET /metrics`` (Prometheus, see ``metrics.py``), ``GET /openapi.json``
(``openapi.py``), and the playground at ``/``
(``static/``: one page that streams a request with ``awrs_events`` and draws it). A request's constraint
comes from ``response_format`` (``json_schema`` or ``json_object``) or from vLLM's extension
fields ``guided_regex``, ``guided_json``,
``guided_grammar`` (Lark) and ``guided_choice``; awrs's own options are ``particles``,
``method``, ``seed``, ``ess_threshold``, ``budget_twist``, ``resample_power``, ``masks`` and ``time_limit``. ``n``
returns the ``n`` most probable texts of the posterior as choices; the response's ``awrs`` field carries the
posterior, its effective sample size, the estimate of log P(constraint), the weighted samples, the run
statistics and which batch the request ran in.

Handlers are async: they validate the request, build its constraint (in a thread), queue a
:class:`~awrs.server.batcher.Ticket` and await it while watching for the client going away.
One worker thread (:class:`~awrs.server.batcher.Batcher`) owns the model and runs all queued
requests together with :func:`awrs.generate_many`.

``stream: true`` sends server-sent events in OpenAI's chunk format while SMC runs: the text
every particle still carrying weight shares, as it grows (it begins every text the run can
return, so nothing sent is taken back), then the rest of the first choice and the others
(``stream.py``). ``stream_options.awrs_events`` adds each step's particles as ``event: awrs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..models.base import LanguageModel
from .batcher import Batcher, Outcome, Ticket
from .constraints import build_constraint
from .errors import ApiError, bad_request, error_body
from .limits import Limits
from .metrics import ServerMetrics
from .openapi import install_openapi
from .options import request_options
from .responses import Chunks, choice, choices_of, extension, replay, stream_chunks, usage_of
from .schemas import ChatCompletionRequest, CompletionRequest, _Common, message_dicts, parse_body
from .stream import LiveRun, live_chunks

log = logging.getLogger("awrs.server")

#: How often a waiting handler checks whether its client is still connected (seconds).
DISCONNECT_POLL = 0.1
COMPLETION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
#: Bytes read and thrown away from an oversized body before answering 413, so that the client
#: sees the answer instead of a reset connection.
DRAIN_LIMIT = 64 * 1024 * 1024
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
STATIC = Path(__file__).resolve().parent / "static"  # the playground: plain files, no build step


# -- the app -------------------------------------------------------------------------------


class _Service:
    """What the endpoints share: the batcher, limits, the model's name and EOS ids, metrics and
    the API key; and the steps of answering a completion request."""

    def __init__(self, model: LanguageModel, limits: Limits, name: str, api_key: str | None) -> None:
        self.limits, self.name, self.api_key = limits, name, api_key
        self.metrics = ServerMetrics(lambda: self.batcher.load())
        self.batcher = Batcher(
            model, max_batch_particles=limits.max_batch_particles, max_pending=limits.max_pending,
            max_prompt_tokens=limits.max_prompt_tokens, batch_window=limits.batch_window, metrics=self.metrics,
        )
        self.created = int(time.time())
        self.eos_ids = frozenset(model.vocab.eos_ids)
        self.vocab = model.vocab

    def answer(self, request: Request, response: Response) -> Response:
        """``response``, counted in the metrics when it answers a completion request."""
        if request.url.path in COMPLETION_PATHS:
            self.metrics.count_request(response.status_code)
        return response

    def check_auth(self, request: Request) -> None:
        if self.api_key is None:
            return
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), self.api_key.encode()):
            raise ApiError(401, "invalid or missing API key", code="invalid_api_key")

    async def read_body(self, request: Request) -> bytes:
        limit = self.limits.max_body_bytes
        too_large = ApiError(413, f"the request body exceeds {limit} bytes", code="request_too_large")
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise bad_request("invalid Content-Length header", code="invalid_header") from None
            if size > DRAIN_LIMIT:
                raise too_large
        body = bytearray()
        seen = 0
        try:
            async for chunk in request.stream():
                seen += len(chunk)
                if seen <= limit:
                    body += chunk
                elif seen > DRAIN_LIMIT:
                    break
        except ClientDisconnect:
            raise ApiError(400, "the client disconnected while sending the request", code="client_disconnected") from None
        if seen > limit:
            raise too_large
        return bytes(body)

    def check_model(self, requested: str | None) -> None:
        if requested is not None and requested != self.name:
            raise ApiError(404, f"the model {requested!r} does not exist; this server has {self.name!r}",
                           param="model", code="model_not_found")

    async def prepare(self, request: Request, cls):
        self.check_auth(request)
        parsed = parse_body(await self.read_body(request), cls)
        self.check_model(parsed.model)
        return parsed

    async def run(self, request: Request, ticket: Ticket) -> Outcome | None:
        """Queue ``ticket`` and wait for it; ``None`` if the client went away."""
        future = asyncio.wrap_future(self.batcher.submit(ticket))
        try:
            while True:
                done, _ = await asyncio.wait({future}, timeout=DISCONNECT_POLL)
                if done:
                    return future.result()
                if await request.is_disconnected():
                    ticket.cancel("the client disconnected")
                    future.cancel()
                    return None
        except asyncio.CancelledError:
            ticket.cancel("the request was cancelled")
            future.cancel()
            raise

    async def complete(self, request: Request, parsed: _Common, prompt, options: dict, *, chat: bool):
        constraint = await run_in_threadpool(build_constraint, parsed)
        prefix, kind = ("chatcmpl", "chat.completion") if chat else ("cmpl", "text_completion")
        head = {"id": f"{prefix}-{uuid.uuid4().hex}", "created": int(time.time()), "model": self.name}
        stream_options = parsed.stream_options
        chunks = Chunks(head, chat=chat, include_usage=bool(stream_options and stream_options.include_usage))

        def finish(outcome: Outcome):
            choices = choices_of(outcome, parsed.n, options["max_tokens"], self.eos_ids)
            return choices, usage_of(outcome, choices), extension(outcome, options, constraint)

        if parsed.stream and options["method"] != "rejection":  # rejection's rounds start over
            return await self.stream_live(request, constraint, prompt, options, chunks, finish,
                                          events=bool(stream_options and stream_options.awrs_events))
        ticket = Ticket(prompt=prompt, constraint=constraint, options=options)
        outcome = await self.run(request, ticket)
        if outcome is None:
            return self.answer(request, Response(status_code=499))
        choices, usage, ext = finish(outcome)
        if not parsed.stream:
            body = dict(head, object=kind, choices=[choice(c, k, chat) for k, c in enumerate(choices)],
                        usage=usage, awrs=ext)
            return self.answer(request, JSONResponse(body))
        return self.answer(request, _event_stream(replay(stream_chunks(
            head, choices, usage, ext, chat=chat, include_usage=chunks.include_usage))))

    async def stream_live(self, request: Request, constraint, prompt, options: dict, chunks: Chunks, finish,
                          *, events: bool):
        """Stream settled text as SMC runs (see ``stream.py``). Errors found before the first
        step (a prompt too long, a full queue) are still plain HTTP errors."""
        live = LiveRun(asyncio.get_running_loop(), self.vocab, events=events)
        ticket = Ticket(prompt=prompt, constraint=constraint, options=options, on_step=live.on_step)
        future = asyncio.wrap_future(self.batcher.submit(ticket))
        first: list = []
        try:
            while not first and not future.done():
                first = await live.wait(future, timeout=DISCONNECT_POLL)
                if not first and not future.done() and await request.is_disconnected():
                    ticket.cancel("the client disconnected")
                    future.cancel()
                    return self.answer(request, Response(status_code=499))
        except asyncio.CancelledError:
            ticket.cancel("the request was cancelled")
            future.cancel()
            raise
        if not first and future.exception() is not None:
            future.result()  # raises the ApiError, answered as usual
        return self.answer(request, _event_stream(live_chunks(live, first, future, ticket, chunks, finish)))


class _InProgress:
    """ASGI middleware counting completion requests from arrival until their answer is over
    (``awrs_requests_in_progress``): a handler or stream that never ends shows there."""

    def __init__(self, app, gauge) -> None:
        self.app, self.gauge = app, gauge

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] not in COMPLETION_PATHS:
            await self.app(scope, receive, send)
            return
        self.gauge.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.gauge.dec()


def _event_stream(body) -> StreamingResponse:
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def create_app(
    model: LanguageModel | None = None, *, limits: Limits | Mapping | None = None,
    model_name: str | None = None, api_key: str | None = None,
    metrics_source: Callable[[], Awaitable[bytes]] | None = None,
):
    """A FastAPI app serving ``model`` (``None``: the embedded model) within ``limits``.

    The batching worker starts with the app (or at the first request) and stops at shutdown.
    ``app.state.batcher`` is the :class:`~awrs.server.batcher.Batcher`; ``app.state.limits``
    the :class:`Limits`. With ``api_key``, every request needs ``Authorization: Bearer KEY``.
    ``metrics_source`` answers ``GET /metrics`` in place of this app's own registry (replicas
    gather every replica's series).
    """
    limits = Limits.from_options(limits)
    if model is None:
        from ..models import load_model

        model = load_model()
    service = _Service(model, limits, model_name or getattr(model, "name", None) or "awrs", api_key)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        service.batcher.start()
        try:
            yield
        finally:
            await run_in_threadpool(service.batcher.stop)

    app = FastAPI(title="awrs", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json")
    # outermost but for starlette's own error handler: it sees a request end only when its answer,
    # a stream included, is over (streamed bodies run after the handler has returned)
    app.add_middleware(_InProgress, gauge=service.metrics.in_progress)
    app.state.batcher = service.batcher
    app.state.metrics = service.metrics
    app.state.limits = limits
    app.state.model_name = service.name
    _add_error_handlers(app, service)
    _add_routes(app, service, metrics_source)
    install_openapi(app)
    return app


def _add_error_handlers(app: FastAPI, service: _Service) -> None:
    """Every error in OpenAI's shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return service.answer(request, JSONResponse(exc.body(), status_code=exc.status))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc):
        status = exc.status_code
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        err = ApiError(status, message, code={404: "not_found", 405: "method_not_allowed"}.get(status))
        return service.answer(request, JSONResponse(err.body(), status_code=status,
                                                    headers=getattr(exc, "headers", None)))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc):
        return service.answer(request, JSONResponse(bad_request(f"invalid request: {exc.errors()[:1]}").body(),
                                                    status_code=400))

    @app.exception_handler(Exception)
    async def _unexpected(request, exc):
        log.error("unexpected error: %s: %s", type(exc).__name__, exc, exc_info=exc)
        return service.answer(request, JSONResponse(
            error_body(f"internal server error: {type(exc).__name__}", "server_error", None, "internal_error"),
            status_code=500,
        ))


def _add_routes(app: FastAPI, service: _Service, metrics_source=None) -> None:
    limits = service.limits

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        parsed: ChatCompletionRequest = await service.prepare(request, ChatCompletionRequest)
        messages = message_dicts(parsed.messages)
        max_tokens = parsed.max_tokens
        if parsed.max_completion_tokens is not None:
            if max_tokens is not None and max_tokens != parsed.max_completion_tokens:
                raise bad_request("max_tokens and max_completion_tokens disagree", param="max_completion_tokens",
                                  code="invalid_value")
            max_tokens = parsed.max_completion_tokens
        options = request_options(parsed, limits, max_tokens=max_tokens)
        return await service.complete(request, parsed, messages, options, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        parsed: CompletionRequest = await service.prepare(request, CompletionRequest)
        prompt = parsed.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            if len(prompt) != 1:
                raise bad_request(
                    "send one prompt per request (concurrent requests are batched together anyway)",
                    param="prompt", code="unsupported_parameter",
                )
            prompt = prompt[0]
        options = request_options(parsed, limits, max_tokens=parsed.max_tokens)
        return await service.complete(request, parsed, prompt, options, chat=False)

    @app.get("/v1/models")
    async def models(request: Request):
        service.check_auth(request)
        return {"object": "list", "data": [{"id": service.name, "object": "model", "created": service.created,
                                            "owned_by": "awrs"}]}

    @app.get("/metrics")
    async def prometheus_metrics(request: Request):
        service.check_auth(request)
        body, content_type = service.metrics.exposition()
        if metrics_source is not None:
            body = await metrics_source()
        return Response(body, media_type=content_type)

    @app.get("/", include_in_schema=False)
    async def playground():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/health")
    async def health():
        snapshot = service.batcher.snapshot()
        return dict(status="ok", model=service.name, **snapshot, limits=limits.as_dict())


def serve(
    model_path: str | None = None, host: str = "127.0.0.1", port: int = 8000, *, backend: str = "auto",
    device: str = "cpu", model_name: str | None = None, api_key: str | None = None,
    log_level: str = "info", quant: str | None = None, threads: int | None = None,
    n_ctx: int | None = None, kv_cache_gb: float | None = None, dtype: str | None = None, **limits,
) -> None:
    """Load a model and serve it with uvicorn (loopback only unless ``host`` says otherwise).

    ``limits`` are :class:`Limits` fields (``max_tokens=256``, ``max_batch_particles=128``...).
    """
    import uvicorn
    checked = Limits.from_options(limits)  # bad limits fail before the model loads
    if host not in LOOPBACK and api_key is None:
        log.warning("serving on %s without an API key: anyone who can reach it can use it", host)
    from ..models import load_model
    from ..models.named import model_options

    options = model_options(model_path, backend, threads=threads, n_ctx=n_ctx, quant=quant, kv_cache_gb=kv_cache_gb,
                            dtype=dtype)
    model = load_model(model_path, device=device, backend=backend, **options)
    print(f"awrs: serving {model.name} ({model.runs_as})", file=sys.stderr, flush=True)
    app = create_app(model, limits=checked, model_name=model_name, api_key=api_key)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
