"""``run_eval``: evaluate one method on one domain, one JSON line per instance, resumable."""

from __future__ import annotations

import inspect
import json
import math
import os
import sys
import time
import traceback
from itertools import islice
from pathlib import Path

from ..errors import ConfigError
from ..generate import generate
from .base import Domain, Instance
from .domains import get_domain
from .methods import ALL_METHODS, run_method, with_stops

FORMAT = "awrs-eval/1"


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
    """
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
    max_tokens = max_tokens or dom.max_tokens
    out_path = Path(out_path)
    done = {r["id"] for r in read_records(out_path)
            if r.get("domain") == dom.name and record_label(r) == label and r.get("particles") == particles}
    _repair_tail(out_path)
    try:
        instances = list(islice(dom.instances(data_dir, seed=seed), start, None if limit is None else start + limit))
    except (OSError, ImportError) as err:
        raise ConfigError(f"cannot read {dom.name} data in {data_dir}: {err}") from None
    model_name = getattr(model, "name", type(model).__name__)
    model = with_stops(model, dom.stops)
    bar = _bar(len(instances), f"{dom.name} {label}") if progress else None
    scores: list[float] = []
    interrupted = False
    try:
        with open(out_path, "a", encoding="utf-8") as sink:
            for index, instance in enumerate(instances, start):
                if instance.id in done:
                    if bar is not None:
                        bar.update(1)
                    continue
                record = _evaluate(model, dom, instance, method, particles=particles,
                                   max_tokens=max_tokens, seed=seed + index, model_name=model_name,
                                   time_limit=time_limit, options=options)
                sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                sink.flush()
                os.fsync(sink.fileno())
                if record["status"] == "ok":
                    scores.append(record["metrics"]["accuracy"])
                if bar is not None:
                    bar.update(1)
                    if scores:
                        bar.set_postfix(acc=f"{sum(scores) / len(scores):.3f}", n=len(scores))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
        dom.close()
    summary = summarize([r for r in read_records(out_path) if r.get("domain") == dom.name
                         and record_label(r) == label and r.get("particles") == particles])
    summary.update(domain=dom.name, method=label, out=str(out_path), interrupted=interrupted)
    return summary


SMC_METHODS = ("awrs-smc", "masking-smc")
SMC_SETTINGS = ("ess_threshold", "budget_twist", "resample_power")


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


def _evaluate(model, dom: Domain, instance: Instance, method: str, *, particles: int,
              max_tokens: int, seed: int, model_name: str, time_limit: float | None = None,
              options: dict | None = None) -> dict:
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
        "tokens": stats.tokens, "constraint_checks": stats.constraint_checks,
        "model_calls": stats.model_calls, "resamples": stats.resamples,
        "budget_kills": stats.budget_kills,
        "log_marginal_likelihood": _finite(result.log_marginal_likelihood), "message": result.message,
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
        "tokens": tokens,
        "checks_per_token": sum(r["constraint_checks"] for r in ok) / tokens if tokens else None,
        "model_calls_per_token": sum(r["model_calls"] for r in ok) / tokens if tokens else None,
        "extra": {k: mean(k) for k in extra_keys},
    }


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
