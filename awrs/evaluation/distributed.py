"""``awrs eval --ray``: the same evaluation, its instances spread over Ray actors.

The driver (this process) plans the run exactly as a local one (:func:`plan_eval`: the range,
the instances already in the results file) and is the only writer of the results file. Each
worker is a Ray actor that loads the model once and builds its own copy of the domain from
the same data, then evaluates the instances it is sent *by position*: instance k gets seed
S + k and the same code path as a local run, so every result line equals the local one but
for its timings, whichever worker ran it and in whatever order lines arrive.

Failures:
* Ctrl-C in the driver: the lines already written stay (each is flushed and synced), the
  run says it was interrupted, and re-running the command resumes.
* A worker that dies (killed, out of memory, its node lost): Ray restarts the actor, and the
  instance it was running is sent again, to any worker; after ``attempts`` deaths on the same
  instance it is recorded as skipped with the reason, so a poisonous instance cannot stall the
  run. A line is written only when its result arrives, so nothing is written twice.

Data must be readable at the same path on every node (a shared or copied folder); the model
is loaded by each worker with ``load_model`` (a picklable callable), on the worker's node.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..cluster import connect
from ..errors import ConfigError
from .base import Domain
from .domains import get_domain
from .methods import with_stops
from .runner import EvalPlan, Progress, ResultsSink, plan_eval

DEFAULT_ATTEMPTS = 3


class EvalWorker:
    """One Ray actor: a model and its own copy of the domain, evaluating instances by position."""

    def __init__(self, load_model: Callable[[], object], plan: EvalPlan) -> None:
        self.plan = plan
        self.instances = dict(plan.read_instances())  # as the driver read them
        model = load_model()
        self.model_name = getattr(model, "name", type(model).__name__)
        self.model = with_stops(model, plan.domain.stops)

    def evaluate(self, index: int) -> dict:
        return self.plan.evaluate(self.model, index, self.instances[index], self.model_name)


def run_eval_ray(
    load_model: Callable[[], object], domain: str | Domain, data_dir: str | Path, method: str, *,
    workers: int = 2, address: str | None = None, cpus_per_worker: float = 1, gpus_per_worker: float = 0,
    particles: int = 5, max_tokens: int | None = None, limit: int | None = None, seed: int = 0,
    out_path: str | Path, progress: bool = True, time_limit: float | None = None, start: int = 0,
    options: dict | None = None, attempts: int = DEFAULT_ATTEMPTS,
) -> dict:
    """:func:`~awrs.evaluation.run_eval` on a Ray cluster with ``workers`` actors.

    ``load_model`` builds the model inside each worker (it must pickle: a function or a
    ``functools.partial``). ``address``: a cluster to join (``auto`` or ``HOST:PORT``), or None
    for a local one. Each worker reserves ``cpus_per_worker`` CPUs and ``gpus_per_worker``
    GPUs. Returns the same summary as a local run.
    """
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    fresh = get_domain(domain) if isinstance(domain, str) else domain
    # The workers get the domain as it is before the driver reads its data (a domain may hold
    # open database connections afterwards, which do not travel).
    pristine = copy.deepcopy(fresh)
    ray = connect(address, num_cpus=max(int(workers * cpus_per_worker), 1) if address is None else None)
    plan = plan_eval(fresh, data_dir, method, particles=particles, max_tokens=max_tokens, limit=limit,
                     seed=seed, out_path=out_path, time_limit=time_limit, start=start, options=options)
    pending = [index for index, _ in plan.pending]
    worker_plan = replace(plan, domain=pristine, instances=[], done=set())

    def on_workers(sink: ResultsSink, bar: Progress) -> None:
        if not pending:
            return
        remote = ray.remote(EvalWorker).options(
            num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=-1, max_task_retries=0,
        )
        actors = [remote.remote(load_model, worker_plan) for _ in range(min(workers, len(pending)))]
        try:
            _drive(ray, actors, pending, plan, sink, bar, attempts)
        finally:
            for actor in actors:
                ray.kill(actor, no_restart=True)

    return plan.run(on_workers, progress=progress)


def _drive(ray, actors, pending: list[int], plan: EvalPlan, sink: ResultsSink, bar: Progress,
           attempts: int) -> None:
    """Keep every actor busy with one instance until none is left; write each result as it
    comes. An actor that died is restarted by Ray; its instance goes back in the queue."""
    from ray.exceptions import RayActorError, RayTaskError

    instances = dict(plan.instances)
    queue = list(reversed(pending))
    deaths: dict[int, int] = {}
    running = {}  # object ref -> (actor, index)

    def submit(actor) -> None:
        if queue:
            index = queue.pop()
            running[actor.evaluate.remote(index)] = (actor, index)

    for actor in actors:
        submit(actor)
    while running:
        finished, _ = ray.wait(list(running), num_returns=1)
        ref = finished[0]
        actor, index = running.pop(ref)
        try:
            record = ray.get(ref)
        except (RayActorError, RayTaskError) as err:
            deaths[index] = deaths.get(index, 0) + 1
            if deaths[index] < attempts:
                queue.append(index)  # next, on whichever worker asks first (Ray restarts this one)
                submit(actor)
                continue
            record = plan.skipped(index, instances[index], f"worker died {deaths[index]} times while "
                                  f"evaluating it ({type(err).__name__})", model_name="?")
        sink.write(record)
        bar.record(record)
        submit(actor)
