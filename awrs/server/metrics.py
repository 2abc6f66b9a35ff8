"""Prometheus metrics of one server, exposed at ``GET /metrics``.

Each app owns its registry, so two servers in one process (tests, a notebook) never mix their
counts. What is measured, and where:

* ``awrs_requests_total{outcome}``: completion requests by how they ended (``ok``,
  ``invalid`` for 4xx, ``rejected`` for 429 queue full, ``cancelled`` when the client went
  away, ``error`` for 5xx), counted where the HTTP answer is made;
* queue and rows: ``awrs_queue_length``, ``awrs_running_requests``, ``awrs_running_rows``
  (particles in the running batch), ``awrs_open_sessions`` (decoding sessions the worker holds
  open, 0 or 1) and ``awrs_session_rows`` (rows they hold in the model, as of the last step),
  read from the batcher when scraped; all five are 0 once the server is idle, so a request whose
  state outlived it shows there;
* ``awrs_requests_in_progress``: completion requests from arrival until their answer (a stream
  to its end, or to the client's hang-up) is over, counted where the HTTP request is handled;
* per request, when its generation ends: ``awrs_request_seconds`` (queued to answered),
  ``awrs_queue_wait_seconds``, ``awrs_time_to_first_token_seconds`` (queued until the model's
  first next-token distribution for it is ready: the prompt is evaluated and its first token
  is being drawn), ``awrs_rejections_per_token``, ``awrs_effective_sample_size`` (of the
  answer's posterior, :attr:`awrs.Result.ess`: 0 without a sample, near 1 for one resting on one
  sample);
* totals: ``awrs_particle_tokens_total`` (rate() of it is tokens/s; the last batch's rate is
  ``awrs_batch_tokens_per_second``), ``awrs_seconds_total{part}`` (model, constraint,
  sampler), ``awrs_constraint_checks_total``, ``awrs_rejections_total``, ``awrs_masks_total``,
  ``awrs_resamples_total``, ``awrs_batches_total``.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from ..result import Result

SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
PER_TOKEN_BUCKETS = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0)
ESS_BUCKETS = (0.0, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0)
OUTCOMES = ("ok", "invalid", "rejected", "cancelled", "error")


def outcome_of(status: int) -> str:
    """The ``outcome`` label of a completion request answered with HTTP ``status``."""
    if status < 400:
        return "ok"
    if status == 429:
        return "rejected"
    if status == 499:
        return "cancelled"
    return "invalid" if status < 500 else "error"


class ServerMetrics:
    """The metrics of one app; ``load()`` returns the batcher's live figures for the gauges:
    ``{"pending": int, "running": int, "running_rows": int, "sessions": int, "session_rows": int}``."""

    def __init__(self, load: Callable[[], dict]) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("awrs_requests", "Completion requests by outcome", ["outcome"], registry=registry)
        for outcome in OUTCOMES:
            self.requests.labels(outcome)  # every outcome shows, at 0, from the start
        for name, doc, key in (
            ("awrs_queue_length", "Requests waiting for a batch", "pending"),
            ("awrs_running_requests", "Requests in the running batch", "running"),
            ("awrs_running_rows", "Particles (model rows) in the running batch", "running_rows"),
            ("awrs_open_sessions", "Decoding sessions the batching worker holds open", "sessions"),
            ("awrs_session_rows", "Rows the open decoding session holds in the model", "session_rows"),
        ):
            Gauge(name, doc, registry=registry).set_function(lambda key=key: load()[key])
        self.in_progress = Gauge("awrs_requests_in_progress",
                                 "Completion requests being handled, streamed answers included", registry=registry)
        self.request_seconds = Histogram("awrs_request_seconds", "Queued to answered", buckets=SECONDS_BUCKETS,
                                         registry=registry)
        self.queue_wait = Histogram("awrs_queue_wait_seconds", "Queued to the start of its batch",
                                    buckets=SECONDS_BUCKETS, registry=registry)
        self.first_token = Histogram("awrs_time_to_first_token_seconds",
                                     "Queued to its first next-token distribution", buckets=SECONDS_BUCKETS,
                                     registry=registry)
        self.rejections_per_token = Histogram("awrs_rejections_per_token", "Rejected draws per particle-token",
                                              buckets=PER_TOKEN_BUCKETS, registry=registry)
        self.ess = Histogram("awrs_effective_sample_size", "Effective sample size of each answer's posterior",
                             buckets=ESS_BUCKETS, registry=registry)
        self.particle_tokens = Counter("awrs_particle_tokens", "Tokens generated, summed over particles",
                                       registry=registry)
        self.batch_rate = Gauge("awrs_batch_tokens_per_second", "Particle-tokens per second of the last batch",
                                registry=registry)
        self.seconds = Counter("awrs_seconds", "Generation time by part", ["part"], registry=registry)
        self.checks = Counter("awrs_constraint_checks", "Constraint checks of candidate tokens", registry=registry)
        self.rejections = Counter("awrs_rejections", "Rejected draws", registry=registry)
        self.masks = Counter("awrs_masks", "Whole-vocabulary token masks computed", registry=registry)
        self.resamples = Counter("awrs_resamples", "SMC resampling steps", registry=registry)
        self.batches = Counter("awrs_batches", "Batches run", registry=registry)

    def count_request(self, status: int) -> None:
        self.requests.labels(outcome_of(status)).inc()

    def observe_batch(self, seconds: float, particle_tokens: int) -> None:
        self.batches.inc()
        if seconds > 0:
            self.batch_rate.set(particle_tokens / seconds)

    def observe_result(self, result: Result, *, waited: float, first_token: float | None, total: float) -> None:
        stats = result.stats
        self.request_seconds.observe(total)
        self.queue_wait.observe(waited)
        if first_token is not None:
            self.first_token.observe(first_token)
        if stats.tokens:
            self.rejections_per_token.observe(stats.rejections / stats.tokens)
        self.ess.observe(result.ess)
        self.particle_tokens.inc(stats.tokens)
        self.seconds.labels("model").inc(stats.model_seconds)
        self.seconds.labels("constraint").inc(stats.constraint_seconds)
        self.seconds.labels("sampler").inc(max(stats.sampler_seconds, 0.0))
        self.checks.inc(stats.constraint_checks)
        self.rejections.inc(stats.rejections)
        self.masks.inc(stats.masks)
        self.resamples.inc(stats.resamples)

    def exposition(self) -> tuple[bytes, str]:
        """The text format and its content type, for ``GET /metrics``."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
