"""Command-line options of ``awrs serve`` (also ``python -m awrs.server``).

``add_serve_arguments(parser)`` adds the options to an argparse parser; ``run_serve(args)``
starts the server. Limits left out keep the defaults of :class:`~awrs.server.limits.Limits`.
"""

from __future__ import annotations

import argparse
import os

from ..cli.options import add_model_options, check_gpus_have_a_device, model_options_from_args

#: Limits settable on the command line: (flag, type, help).
LIMIT_OPTIONS = [
    ("max_tokens", int, "largest max_tokens a request may ask for (default 512)"),
    ("default_max_tokens", int, "max_tokens of a request that gives none (default 64)"),
    ("max_particles", int, "largest particles of one request (default 64)"),
    ("default_particles", int, "particles of a request that gives none (default 10)"),
    ("max_n", int, "largest n (choices returned) (default 16)"),
    ("max_seconds", float, "run time allowed to one request, in seconds (default 60)"),
    ("max_batch_particles", int, "total particles of the requests run together (default 256)"),
    ("max_body_bytes", int, "largest request body in bytes (default 1000000)"),
    ("max_pending", int, "requests queued at once before 429 (default 1024)"),
    ("max_prompt_tokens", int, "longest prompt in tokens (default 4096)"),
    ("batch_window", float, "seconds to gather requests after an idle spell (default 0.005)"),
]


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
        if not value > 0 and not (kind is float and value == 0):
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value

    return parse


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    parser.add_argument("--api-key", default=None,
                        help="require 'Authorization: Bearer KEY' (default: $AWRS_API_KEY, else no key)")
    parser.add_argument("--served-model-name", default=None, help="the model id clients send (default: the model's name)")
    parser.add_argument("--methods", default=None, metavar="M1,M2",
                        help="methods requests may choose (default: all but rejection)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    cluster = parser.add_argument_group("replicated on a Ray cluster (pip install -e \".[ray]\")")
    cluster.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                         help="serve replicas with Ray Serve: alone, a local cluster on this machine; "
                              "`auto` or HOST:PORT joins a running one (ray start --head)")
    cluster.add_argument("--replicas", type=_positive(int), default=2,
                         help="with --ray: replicas, each with its own model and batcher (default 2)")
    cluster.add_argument("--cpus-per-replica", type=_positive(float), default=None, metavar="N",
                         help="with --ray: CPUs each replica reserves and its model's threads unless --threads (default: "
                              "this machine's CPUs split between the replicas on a local cluster, else 1)")
    cluster.add_argument("--gpus-per-replica", type=float, default=0, metavar="N",
                         help="with --ray: GPUs each replica reserves (fractions share one; needs --device)")
    group = parser.add_argument_group("limits")
    for name, kind, text in LIMIT_OPTIONS:
        group.add_argument("--" + name.replace("_", "-"), dest=name, type=_positive(kind), default=None, help=text)


def limits_from_args(args: argparse.Namespace) -> dict:
    """The limits given on the command line (others keep their defaults)."""
    limits = {name: getattr(args, name) for name, _, _ in LIMIT_OPTIONS if getattr(args, name, None) is not None}
    if getattr(args, "methods", None):
        limits["methods"] = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    return limits


def run_serve(args: argparse.Namespace) -> int:
    from . import serve

    if args.ray is not None:
        return _serve_on_ray(args)
    serve(
        args.model, host=args.host, port=args.port, backend=args.backend, device=args.device,
        model_name=args.served_model_name, api_key=args.api_key or os.environ.get("AWRS_API_KEY") or None,
        log_level=args.log_level, quant=args.quant, threads=args.threads, n_ctx=args.n_ctx,
        kv_cache_gb=args.kv_cache_gb, dtype=args.dtype, **limits_from_args(args),
    )
    return 0


def _serve_on_ray(args: argparse.Namespace) -> int:
    import functools

    from ..models import load_model
    from .limits import Limits
    from .replicated import serve_on_ray

    limits = Limits.from_options(limits_from_args(args))  # bad limits fail before Ray starts
    check_gpus_have_a_device(args.gpus_per_replica, args.device, "--gpus-per-replica")
    address = None if args.ray == "local" else args.ray
    cpus = args.cpus_per_replica
    if cpus is None:
        cpus = max((os.cpu_count() or 1) // args.replicas, 1) if address is None else 1
    options = {"device": args.device, "backend": args.backend}
    options.update(model_options_from_args(args, threads=args.threads or max(int(cpus), 1)))
    serve_on_ray(functools.partial(load_model, args.model, **options), address=address, host=args.host,
                 port=args.port, replicas=args.replicas, cpus_per_replica=cpus, gpus_per_replica=args.gpus_per_replica,
                 limits=limits, model_name=args.served_model_name,
                 api_key=args.api_key or os.environ.get("AWRS_API_KEY") or None)
    return 0
