"""``run_eval``: evaluate one method on one domain, one JSON line per instance, resumable."""

from __future__ import annotations

import inspect
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from ..errors import ConfigError
from ..generate import generate
from .base import Domain, Instance
from .domains import get_domain
from .methods import ALL_METHODS, run_method, with_stops

FORMAT = "awrs-eval/1"
#: where an instance's generation time went: ``<part>_seconds`` in each line (prompt: part of model)
TIME_PARTS = ("model", "prompt", "constraint", "sampler")


def read_records(path: str | Path) -> list[dict]:
    """The complete JSON lines of a results file (a torn last line is ignored)."""
    records = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if not line.endswith("\n"):
                    break  # torn last line (killed while writing)
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        pass
    return records


def _repair_tail(path: Path) -> None:
    """Cut a torn last line so that appended lines start on a line of their own."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as handle:
        data = handle.read()
        if data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        handle.truncate(cut)


def score_outputs(domain: Domain, instance: Instance, outputs: list[dict]) -> dict:
    """Score every output and return the instance's metrics.

    ``accuracy``: posterior-weighted expected score; ``best_accuracy``: the score of the
    highest-weight output; ``valid``: weighted mass on outputs that satisfy the constraint
    (as the domain's metric checks it). No outputs: all 0.
    """
    for out in outputs:
        values = domain.score(instance, out["text"])
        out["score"] = float(values.pop("score"))
        out["valid"] = bool(values.pop("valid", out.get("valid", False)))
        if values:
            out["metrics"] = values
    metrics = {
        "accuracy": sum(o["weight"] * o["score"] for o in outputs),
        "best_accuracy": max(outputs, key=lambda o: o["weight"])["score"] if outputs else 0.0,
        "valid": sum(o["weight"] for o in outputs if o["valid"]),
    }
    metrics.update(domain.aggregate(instance, outputs))
    return metrics


def _finite(x):
    return x if x is None or math.isfinite(x) else None


@dataclass
class EvalPlan:
    """What one ``awrs eval`` run does, worked out before any model runs: the instances still
    to evaluate (with their positions, which fix their seeds), and how each is evaluated."""

    domain: Domain
    label: str
    method: str
    particles: int
    max_tokens: int
    seed: int
    out_path: Path
    time_limit: float | None
    options: dict
    data_dir: Path
    start: int
    limit: int | None
    #: (position, instance) of every instance in the range, done or not
    instances: list[tuple[int, Instance]] = field(default_factory=list)
    done: set[str] = field(default_factory=set)

    def read_instances(self) -> list[tuple[int, Instance]]:
        """(position, instance) of the range, read from the data (the domain may keep what it
        reads for its constraints and scores)."""
        try:
            found = islice(self.domain.instances(self.data_dir, seed=self.seed), self.start,
                           None if self.limit is None else self.start + self.limit)
            return list(enumerate(found, self.start))
        except (OSError, ImportError) as err:
            raise ConfigError(f"cannot read {self.domain.name} data in {self.data_dir}: {err}") from None

    @property
    def pending(self) -> list[tuple[int, Instance]]:
        return [(index, instance) for index, instance in self.instances if instance.id not in self.done]

    def evaluate(self, model, index: int, instance: Instance, model_name: str) -> dict:
        """The result line of one instance (``model`` already wrapped by :func:`with_stops`): the
        same whichever instances the model ran before, so that resumed and distributed runs
        equal one uninterrupted run (a backend that re-uses a prompt prefix gives the
        log-probabilities of a fresh evaluation, bit for bit)."""
        return _evaluate(model, self.domain, instance, self.method, particles=self.particles,
                         max_tokens=self.max_tokens, seed=self.seed + index, model_name=model_name,
                         time_limit=self.time_limit, options=self.options)

    def skipped(self, index: int, instance: Instance, reason: str, model_name: str) -> dict:
        """The result line of an instance that could not be evaluated."""
        header = _record_header(self.domain, instance, self.method, particles=self.particles,
                                max_tokens=self.max_tokens, seed=self.seed + index, model_name=model_name,
                                options=self.options)
        return {**header, "status": "skipped", "reason": reason}

    def run(self, body: Callable[[ResultsSink, Progress], None], *, progress: bool) -> dict:
        """``body(sink, bar)`` evaluates the pending instances; Ctrl-C ends it with every line
        written so far kept. Returns the summary of the results file."""
        bar = Progress(self, progress)
        sink = ResultsSink(self.out_path)
        interrupted = False
        try:
            body(sink, bar)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            sink.close()
            bar.close()
            self.domain.close()
        return self.summary(interrupted)

    def summary(self, interrupted: bool) -> dict:
        """:func:`summarize` of this domain and label's lines in the results file."""
        mine = [r for r in read_records(self.out_path) if r.get("domain") == self.domain.name
                and record_label(r) == self.label and r.get("particles") == self.particles]
        summary = summarize(mine)
        summary.update(domain=self.domain.name, method=self.label, out=str(self.out_path),
                       interrupted=interrupted)
        return summary


def plan_eval(
    domain: str | Domain, data_dir: str | Path, method: str, *, particles: int = 5,
    max_tokens: int | None = None, limit: int | None = None, seed: int = 0,
    out_path: str | Path, time_limit: float | None = None, start: int = 0, options: dict | None = None,
) -> EvalPlan:
    """Read the instances and the results file; see :func:`run_eval` for the arguments."""
    dom = get_domain(domain) if isinstance(domain, str) else domain
    if method not in ALL_METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(ALL_METHODS)}")
    options = dict(options or {})
    label = method_label(method, options)
    data_dir = Path(data_dir)
    if dom.folder and (data_dir / dom.folder).is_dir():
        data_dir = data_dir / dom.folder  # a data root such as ../shared/data
    if not data_dir.is_dir():
        raise ConfigError(f"no data folder at {data_dir}")
    out_path = Path(out_path)
    done = {r["id"] for r in read_records(out_path)
            if r.get("domain") == dom.name and record_label(r) == label and r.get("particles") == particles}
    _repair_tail(out_path)
    plan = EvalPlan(dom, label, method, particles, max_tokens or dom.max_tokens, seed, out_path, time_limit,
                    options, data_dir, start, limit, done=done)
    plan.instances = plan.read_instances()
    return plan


class ResultsSink:
    """Appends result lines so that a kill at any moment leaves only whole lines behind (a
    torn last line is cut by the next run): each line is written, flushed and synced alone."""

    def __init__(self, path: Path) -> None:
        self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 -- closed by close()

    def write(self, record: dict) -> None:
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


class Progress:
    """The progress bar of a run: instances done (of the range, resumed ones included), how
    many were skipped or failed, and the running accuracy."""

    def __init__(self, plan: EvalPlan, enabled: bool) -> None:
        self._bar = _bar(len(plan.instances), f"{plan.domain.name} {plan.label}") if enabled else None
        if self._bar is not None:
            self._bar.update(len(plan.instances) - len(plan.pending))
        self._scores: list[float] = []
        self._skipped = 0

    def record(self, record: dict) -> None:
        if record["status"] == "ok":
            self._scores.append(record["metrics"]["accuracy"])
        else:
            self._skipped += 1
        if self._bar is not None:
            self._bar.update(1)
            postfix = {"acc": f"{sum(self._scores) / len(self._scores):.3f}"} if self._scores else {}
            postfix["n"] = len(self._scores)
            if self._skipped:
                postfix["skipped"] = self._skipped
            self._bar.set_postfix(postfix)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def run_eval(
    model, domain: str | Domain, data_dir: str | Path, method: str, *, particles: int = 5,
    max_tokens: int | None = None, limit: int | None = None, seed: int = 0,
    out_path: str | Path, progress: bool = True, time_limit: float | None = None,
    start: int = 0, options: dict | None = None,
) -> dict:
    """Evaluate ``method`` on the first ``limit`` instances of ``domain`` in ``data_dir``.

    Appends one JSON line per instance to ``out_path`` (flushed as each completes); instances
    whose id is already there (same domain and method) are skipped, so re-running resumes.
    Instances that cannot be evaluated (malformed, missing files, a constraint that does not
    compile, an error while generating) are recorded with ``"status": "skipped"`` and a reason.
    Ctrl-C stops after the last complete line; the summary then has ``"interrupted": True``.
    ``time_limit`` (seconds per instance) stops a slow instance's generation and keeps what
    finished (the record's ``message`` says so). ``start`` skips the first instances (``limit``
    counts after them; instance k keeps seed S + k). ``options`` are passed to
    :func:`awrs.generate` (``ess_threshold``, ``budget_twist``); a run with options is labelled
    ``method (key=value, ...)`` and resumes and reports apart from the method's defaults.
    Returns :func:`summarize` of this domain and label's lines in ``out_path``.
    (:func:`awrs.evaluation.distributed.run_eval_ray` runs the same on a Ray cluster.)
    """
    plan = plan_eval(domain, data_dir, method, particles=particles, max_tokens=max_tokens, limit=limit,
                     seed=seed, out_path=out_path, time_limit=time_limit, start=start, options=options)
    model_name = getattr(model, "name", type(model).__name__)
    model = with_stops(model, plan.domain.stops)

    def one_after_another(sink: ResultsSink, bar: Progress) -> None:
        for index, instance in plan.pending:
            record = plan.evaluate(model, index, instance, model_name)
            sink.write(record)
            bar.record(record)

    return plan.run(one_after_another, progress=progress)


SMC_METHODS = ("awrs-smc", "masking-smc")
SMC_SETTINGS = ("ess_threshold", "budget_twist", "resample_power", "complete_power", "commit_share",
                "commit_lag", "lookahead")


def smc_defaults() -> dict:
    """awrs.generate's defaults for the SMC settings a run may override (recorded per line, so
    that a results file says what ran even after a default changes)."""
    parameters = inspect.signature(generate).parameters
    return {name: parameters[name].default for name in SMC_SETTINGS}


def method_label(method: str, options: dict) -> str:
    """``method``, or ``method (key=value, ...)`` when run with options."""
    if not options:
        return method
    return f"{method} ({', '.join(f'{k}={v}' for k, v in sorted(options.items()))})"


def record_label(record: dict) -> str:
    return method_label(record.get("method", ""), record.get("options") or {})


def _record_header(dom: Domain, instance: Instance, method: str, *, particles: int, max_tokens: int,
                   seed: int, model_name: str, options: dict | None) -> dict:
    record = {
        "format": FORMAT, "id": instance.id, "domain": dom.name, "method": method,
        "particles": particles, "max_tokens": max_tokens, "seed": seed, "model": model_name,
    }
    if options:
        record["options"] = options
    if method in SMC_METHODS:
        record["settings"] = {**smc_defaults(), **(options or {})}  # what actually ran
    if dom.stops:
        record["stops"] = list(dom.stops)
    return record


def _evaluate(model, dom: Domain, instance: Instance, method: str, *, particles: int,
              max_tokens: int, seed: int, model_name: str, time_limit: float | None = None,
              options: dict | None = None) -> dict:
    record = _record_header(dom, instance, method, particles=particles, max_tokens=max_tokens, seed=seed,
                            model_name=model_name, options=options)
    if instance.skip is not None:
        return {**record, "status": "skipped", "reason": instance.skip}
    started = time.perf_counter()
    try:
        constraint = dom.constraint(instance)
    except Exception as err:  # noqa: BLE001 - e.g. a schema that does not compile
        return {**record, "status": "skipped", "reason": f"constraint: {type(err).__name__}: {err}"}
    try:
        outputs, result = run_method(model, instance, constraint, method, particles=particles,
                                     max_tokens=max_tokens, seed=seed, time_limit=time_limit,
                                     **(options or {}))
        metrics = score_outputs(dom, instance, outputs)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001 - one bad instance must not end the run
        last = traceback.extract_tb(err.__traceback__)[-1]
        return {**record, "status": "skipped",
                "reason": f"error: {type(err).__name__}: {err} ({Path(last.filename).name}:{last.lineno})"}
    stats = result.stats
    return {
        **record, "status": "ok", "outputs": outputs, "metrics": metrics,
        "seconds": time.perf_counter() - started, "generate_seconds": stats.total_seconds,
        **{f"{part}_seconds": getattr(stats, f"{part}_seconds") for part in TIME_PARTS},
        "tokens": stats.tokens, "constraint_checks": stats.constraint_checks,
        "model_calls": stats.model_calls, "resamples": stats.resamples,
        "budget_kills": stats.budget_kills, "commits": stats.commits, "doubts": stats.doubts,
        "log_marginal_likelihood": _finite(result.log_marginal_likelihood), "message": result.message,
        "ess": result.ess,
    }


def summarize(records: list[dict]) -> dict:
    """Aggregate result lines: means over evaluated instances, counts of skipped ones."""
    ok = [r for r in records if r.get("status") == "ok"]
    skipped = [r for r in records if r.get("status") == "skipped"]
    n = len(ok)

    def mean(key):
        return sum(r["metrics"].get(key, 0.0) for r in ok) / n if n else None

    tokens = sum(r["tokens"] for r in ok)
    extra_keys = sorted({k for r in ok for k in r["metrics"]} - {"accuracy", "best_accuracy", "valid"})
    return {
        "instances": n,
        "skipped": len(skipped),
        "skip_reasons": _count(r.get("reason", "") for r in skipped),
        "accuracy": mean("accuracy"),
        "best_accuracy": mean("best_accuracy"),
        "valid_rate": mean("valid"),
        "no_output_rate": sum(not r.get("outputs") for r in ok) / n if n else None,
        "seconds_per_instance": sum(r["seconds"] for r in ok) / n if n else None,
        **{f"{part}_seconds_per_instance": _mean_seconds(ok, f"{part}_seconds") for part in TIME_PARTS},
        "tokens": tokens,
        "checks_per_token": sum(r["constraint_checks"] for r in ok) / tokens if tokens else None,
        "model_calls_per_token": sum(r["model_calls"] for r in ok) / tokens if tokens else None,
        "extra": {k: mean(k) for k in extra_keys},
    }


def _mean_seconds(records: list[dict], key: str) -> float | None:
    """The mean of ``key`` over ``records``; None if one lacks it (a line from before it was kept)."""
    if not records or any(key not in r for r in records):
        return None
    return sum(r[key] for r in records) / len(records)


def time_split(summary: dict) -> str | None:
    """Seconds per instance as ``model (prompt) / constraint / sampler``, or None if unknown."""
    parts = [summary.get(f"{part}_seconds_per_instance") for part in TIME_PARTS]
    if any(x is None for x in parts):
        return None
    model, prompt, constraint, sampler = parts
    return f"{model:.2f} ({prompt:.2f}) / {constraint:.2f} / {sampler:.2f}"


def _count(reasons) -> dict:
    out: dict[str, int] = {}
    for reason in reasons:
        key = reason.split(":")[0] if reason.startswith(("error", "constraint")) else reason
        out[key] = out.get(key, 0) + 1
    return out


def format_summary(summary: dict) -> str:
    def f(x, spec=".3f"):
        return "—" if x is None else format(x, spec)

    interrupted = " (interrupted; re-run the same command to resume)" if summary.get("interrupted") else ""
    lines = [
        (f"{summary.get('domain', '?')} · {summary.get('method', '?')}: "
         f"{summary['instances']} instances, {summary['skipped']} skipped{interrupted}"),
        (f"  accuracy (posterior-weighted) {f(summary['accuracy'])}   best sample "
         f"{f(summary['best_accuracy'])}   valid {f(summary['valid_rate'])}   "
         f"no output {f(summary.get('no_output_rate'))}"),
        (f"  {f(summary['seconds_per_instance'], '.2f')} s/instance   {f(summary['checks_per_token'], '.2f')} "
         f"checks/token   {f(summary['model_calls_per_token'], '.3f')} model calls/token"),
    ]
    split = time_split(summary)
    if split is not None:
        lines.append(f"  s/instance model (prompt) / constraint / sampler: {split}")
    for key, value in summary.get("extra", {}).items():
        lines.append(f"  {key} {f(value)}")
    for reason, count in summary.get("skip_reasons", {}).items():
        lines.append(f"  skipped {count}: {reason[:100]}")
    if summary.get("out"):
        lines.append(f"  results: {summary['out']}")
    return "\n".join(lines)


def _bar(total: int, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="inst", file=sys.stderr, dynamic_ncols=True)
