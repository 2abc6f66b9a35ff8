"""Ray, for the commands that spread work over a cluster (``awrs eval --ray``, ``awrs serve
--ray``): imported only by them, so that ``import awrs`` never loads it."""

from __future__ import annotations

import os

from .errors import ConfigError

RAY_HINT = 'pip install -e ".[ray]"  (or: pip install "ray[serve]")'


def import_ray():
    """``ray``, or a ConfigError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--ray needs Ray, which is not installed: {RAY_HINT}") from None
    return ray


def connect(address: str | None, *, num_cpus: int | None = None):
    """Join the cluster at ``address`` (``auto``: the one ``ray start`` made on this machine, or
    ``HOST:PORT``), or start a local one with ``num_cpus`` when ``address`` is None. A session
    already connected is reused."""
    ray = import_ray()
    if not ray.is_initialized():
        options = {"address": address} if address else {"num_cpus": num_cpus or os.cpu_count() or 1}
        try:
            ray.init(log_to_driver=False, include_dashboard=False, **options)
        except ConnectionError as err:
            raise ConfigError(f"cannot reach the Ray cluster at {address}: {err}; start one with "
                              "`ray start --head` or leave the address out for a local cluster") from None
    return ray
