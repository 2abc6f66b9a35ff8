"""``awrs serve --ray``: the same FastAPI app, replicated by Ray Serve.

Each replica is a Ray actor that loads the model once and runs the app of a single-process
server (:func:`~awrs.server.app.create_app`) around it: its own continuous batcher, limits,
API key check, streaming and metrics. Ray Serve's HTTP proxy spreads requests over the
replicas and restarts one that dies; a request in flight on a dying replica ends with an
error from the proxy (HTTP 500), never a hang, and the next requests go to the others.

What is per replica: the model, its batcher and queue (so ``max_pending`` and
``max_batch_particles`` hold per replica), and its metrics registry. What is shared: nothing
but the proxy. ``GET /metrics``, on whichever replica answers it, gathers every replica's
series (one broadcast call) and labels each with ``replica``, so one scrape sees them all.
Each answer carries an ``x-awrs-replica`` header naming the replica that made it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..errors import ConfigError

DEPLOYMENT = "awrs"
REPLICA_HEADER = "x-awrs-replica"


def merged_exposition(texts: Mapping[str, str]) -> bytes:
    """Prometheus text of several replicas as one, each sample labelled with its replica."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.metrics_core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Metric] = {}
    for replica, text in sorted(texts.items()):
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation, family.type,
                                                        family.unit)
            for sample in family.samples:
                merged.add_sample(sample.name, {**sample.labels, "replica": replica}, sample.value,
                                  sample.timestamp, sample.exemplar)

    class _Gathered:
        def collect(self):
            return list(families.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Gathered())
    return generate_latest(registry)


class AwrsReplica:
    """One replica: the model, loaded once, and the single-process app around it."""

    def __init__(self, load_model: Callable[[], object], options: dict, app_name: str) -> None:
        from ray import serve

        self.replica = serve.get_replica_context().replica_id.unique_id
        self.model = load_model()
        self.options = options
        self.app_name = app_name

    def __serve_build_asgi_app__(self):
        from starlette.middleware.base import BaseHTTPMiddleware

        from .app import create_app

        app = create_app(self.model, metrics_source=self._all_metrics, **self.options)
        replica = self.replica

        async def name_the_replica(request, call_next):
            response = await call_next(request)
            response.headers[REPLICA_HEADER] = replica
            return response

        app.add_middleware(BaseHTTPMiddleware, dispatch=name_the_replica)
        return app

    def local_metrics(self) -> tuple[str, str]:
        """This replica's name and metrics (the broadcast target of ``GET /metrics``)."""
        body, _ = self.app.state.metrics.exposition()  # self.app: Serve's name for the built app
        return self.replica, body.decode()

    async def _all_metrics(self) -> bytes:
        from ray import serve

        handle = serve.get_deployment_handle(DEPLOYMENT, app_name=self.app_name)
        answers = await handle.broadcast("local_metrics").results_async()
        return merged_exposition(dict(answers))


def replicated_application(
    load_model: Callable[[], object], *, replicas: int = 2, cpus_per_replica: float = 1,
    gpus_per_replica: float = 0, limits: Mapping | None = None, model_name: str | None = None,
    api_key: str | None = None, app_name: str = "default",
):
    """The Ray Serve application: ``replicas`` copies of the app, each with a model from
    ``load_model`` (a picklable callable, run inside the replica)."""
    from ray import serve

    from .limits import Limits

    checked = Limits.from_options(limits)
    if replicas < 1:
        raise ConfigError(f"--replicas must be at least 1, got {replicas}")
    ingress = serve.ingress()(AwrsReplica)
    deployment = serve.deployment(
        ingress, name=DEPLOYMENT, num_replicas=replicas,
        ray_actor_options={"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica},
        # The app batches requests itself and answers 429 past its own queue limit: let every
        # request reach it rather than queue in front of it.
        max_ongoing_requests=checked.max_pending + checked.max_batch_particles,
    )
    options = {"limits": checked, "model_name": model_name, "api_key": api_key}
    return deployment.bind(load_model, options, app_name)


def serve_on_ray(
    load_model: Callable[[], object], *, address: str | None, host: str, port: int, replicas: int,
    cpus_per_replica: float, gpus_per_replica: float = 0, blocking: bool = True, **app_options,
):
    """Start (or join) a Ray cluster and run the replicated app behind Serve's proxy on
    ``host:port``; with ``blocking``, until Ctrl-C."""
    from ..cluster import connect

    ray = connect(address, num_cpus=max(int(replicas * cpus_per_replica), 1) + 1 if address is None else None)
    from ray import serve

    serve.start(http_options={"host": host, "port": port})
    application = replicated_application(load_model, replicas=replicas, cpus_per_replica=cpus_per_replica,
                                         gpus_per_replica=gpus_per_replica, **app_options)
    handle = serve.run(application, name="default", route_prefix="/")
    if blocking:
        import time

        print(f"awrs: {replicas} replicas serving on http://{host}:{port} (Ctrl-C stops)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            serve.shutdown()
            ray.shutdown()
    return handle
