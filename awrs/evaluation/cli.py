"""Command-line front ends of the harness: ``awrs eval`` and ``awrs report``.

``add_eval_arguments`` / ``add_report_arguments`` fill an argparse sub-parser;
``eval_command`` / ``report_command`` run it. ``python -m awrs.evaluation eval|report ...``
runs them without the main ``awrs`` command.
"""

from __future__ import annotations

import argparse
import json

from ..cli.options import (
    add_commit_options,
    add_lookahead_option,
    add_model_options,
    check_gpus_have_a_device,
    load_model_from_args,
    nonnegative_int,
    positive_float,
    positive_int,
    run_reporting_errors,
)


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    from ..smc.budget import BUDGET_TWISTS
    from .domains import DOMAINS
    from .methods import ALL_METHODS

    parser.add_argument("domain", choices=list(DOMAINS))
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="the domain's data folder, or a root holding it (e.g. ../shared/data)")
    parser.add_argument("--method", choices=ALL_METHODS, default="awrs-smc")
    parser.add_argument("--particles", type=positive_int, default=5)
    parser.add_argument("--time-limit", type=positive_float, default=None, metavar="SECONDS",
                        help="stop an instance's generation after this long, keeping finished samples")
    parser.add_argument("--max-tokens", type=positive_int, default=None,
                        help="tokens per output (default: the domain's, from the paper)")
    parser.add_argument("--limit", type=positive_int, default=None, help="evaluate the first K instances")
    parser.add_argument("--start", type=nonnegative_int, default=0, metavar="K",
                        help="skip the first K instances (--limit counts after them; seeds stay "
                             "per instance), e.g. to report on instances not used for tuning")
    parser.add_argument("--ess-threshold", type=float, default=None,
                        help="SMC methods: resample when ESS < this fraction of particles "
                             "(default 0.5; 0 never resamples)")
    parser.add_argument("--budget-twist", choices=list(BUDGET_TWISTS), default=None,
                        help="SMC methods: how resampling sees --max-tokens (default exact; see awrs generate --help)")
    parser.add_argument("--resample-power", type=float, default=None, metavar="P",
                        help="SMC methods: resampling weighs particles by their weights to this power")
    add_commit_options(parser)
    add_lookahead_option(parser, default=None)
    parser.add_argument("--seed", type=int, default=0, help="instance k uses seed S + k")
    parser.add_argument("--out", required=True, metavar="FILE.jsonl",
                        help="results, one JSON line per instance; re-running resumes")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    cluster = parser.add_argument_group("on a Ray cluster (pip install -e \".[ray]\")")
    cluster.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                         help="spread the instances over Ray workers: alone, a local cluster on this "
                              "machine; `auto` or HOST:PORT joins a running one (ray start --head)")
    cluster.add_argument("--workers", type=positive_int, default=2,
                         help="with --ray: workers, each loading the model once (default 2)")
    cluster.add_argument("--cpus-per-worker", type=positive_float, default=None, metavar="N",
                         help="with --ray: CPUs each worker reserves and its model's threads (default: "
                              "this machine's CPUs split between the workers on a local cluster, else 1)")
    cluster.add_argument("--gpus-per-worker", type=float, default=0, metavar="N",
                         help="with --ray: GPUs each worker reserves (fractions share one; needs --device)")
    add_model_options(parser)


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", metavar="RESULTS.jsonl")
    parser.add_argument("--out", required=True, metavar="REPORT.md")
    parser.add_argument("--plot", default=None, metavar="REPORT.png",
                        help="also plot accuracy against seconds per instance (needs matplotlib)")


def eval_command(args, load=None) -> int:
    """Run ``awrs eval``; ``load(args)`` returns the model (default: as every awrs command)."""
    from .domains import get_domain
    from .runner import format_summary, run_eval

    domain = get_domain(args.domain)  # unknown domains fail before the model loads
    options = {key: value for key, value in
               (("ess_threshold", args.ess_threshold), ("budget_twist", args.budget_twist),
                ("resample_power", args.resample_power), ("complete_power", args.complete_power),
                ("commit_share", args.commit_share), ("commit_lag", args.commit_lag),
                ("lookahead", args.lookahead)) if value is not None}
    common = dict(particles=args.particles, max_tokens=args.max_tokens, limit=args.limit, seed=args.seed,
                  out_path=args.out, progress=not args.json, time_limit=args.time_limit, start=args.start,
                  options=options)
    if args.ray is not None:
        summary = _eval_on_ray(args, domain, load, common)
    else:
        model = (load or load_model_from_args)(args)
        summary = run_eval(model, domain, args.data, args.method, **common)
    print(json.dumps(summary) if args.json else format_summary(summary))
    return 130 if summary.get("interrupted") else 0


def _eval_on_ray(args, domain, load, common: dict) -> dict:
    import copy
    import functools
    import os

    from .distributed import run_eval_ray

    check_gpus_have_a_device(args.gpus_per_worker, args.device, "--gpus-per-worker")
    address = None if args.ray == "local" else args.ray
    cpus = args.cpus_per_worker
    if cpus is None:
        cpus = max((os.cpu_count() or 1) // args.workers, 1) if address is None else 1
    worker_args = copy.copy(args)
    if worker_args.threads is None:  # each worker's model uses the CPUs it reserved
        worker_args.threads = max(int(cpus), 1)
    load_model = functools.partial(load or load_model_from_args, worker_args)
    return run_eval_ray(load_model, domain, args.data, args.method, workers=args.workers, address=address,
                        cpus_per_worker=cpus, gpus_per_worker=args.gpus_per_worker, **common)


def report_command(args) -> int:
    from pathlib import Path

    from ..errors import ConfigError
    from .report import make_report

    missing = [p for p in args.results if not Path(p).is_file()]
    if missing:
        raise ConfigError(f"no results file {missing[0]}")
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ConfigError("--plot needs matplotlib (pip install matplotlib)") from None
    make_report(args.results, args.out, plot=args.plot)
    print(f"wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m awrs.evaluation",
                                     description="Evaluate awrs methods on the paper's domains.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_eval_arguments(commands.add_parser("eval", help="evaluate one method on one domain"))
    add_report_arguments(commands.add_parser("report", help="tables and a plot from results files"))
    args = parser.parse_args(argv)
    return run_reporting_errors(
        lambda: eval_command(args) if args.command == "eval" else report_command(args)
    )
