"""A request's :func:`awrs.generate` options, validated against the server's limits."""

from __future__ import annotations

from ..sampling.samplers import MASK_MODES
from ..smc.budget import BUDGET_TWISTS
from ..smc.commitment import STREAMING_POLICY
from .errors import bad_request
from .limits import Limits
from .schemas import _Common


def request_options(request: _Common, limits: Limits, *, max_tokens: int | None) -> dict:
    """Validated :func:`awrs.generate` options for a request, within ``limits``."""
    if max_tokens is None:
        max_tokens = limits.default_max_tokens
    _in_range("max_tokens", max_tokens, 1, limits.max_tokens)
    _in_range("n", request.n, 1, limits.max_n)
    particles = request.particles
    if particles is None:
        particles = min(max(limits.default_particles, request.n), limits.max_particles)
    _in_range("particles", particles, 1, limits.max_particles)
    if request.n > particles:
        raise bad_request(f"n={request.n} needs at least as many particles (got {particles})",
                          param="n", code="invalid_value")
    method = request.method or "awrs-smc"
    if method not in limits.methods:
        raise bad_request(f"unknown or disabled method {method!r}; choose one of {', '.join(limits.methods)}",
                          param="method", code="invalid_value")
    options = {"particles": particles, "max_tokens": max_tokens, "method": method}
    if request.seed is not None:
        if not 0 <= request.seed < 2**64:
            raise bad_request(f"seed must be between 0 and 2**64 - 1, got {request.seed}", param="seed",
                              code="invalid_value")
        options["seed"] = request.seed
    if request.stream:  # particles that share text early let the stream flow (awrs.smc.commitment)
        options.update(STREAMING_POLICY)
    for name in ("ess_threshold", "resample_power", "complete_power", "commit_share"):
        value = getattr(request, name)
        if value is not None:
            if not 0.0 <= value <= 1.0:
                raise bad_request(f"{name} must be in [0, 1], got {value}", param=name, code="invalid_value")
            options[name] = value
    if options.get("commit_share") == 0:  # 0: never commit
        options["commit_share"] = None
    if request.commit_lag is not None:
        if request.commit_lag < 0:
            raise bad_request(f"commit_lag must be a number of tokens >= 0, got {request.commit_lag}",
                              param="commit_lag", code="invalid_value")
        options["commit_lag"] = request.commit_lag
    if request.budget_twist is not None:
        if request.budget_twist not in BUDGET_TWISTS:
            raise bad_request(f"budget_twist must be one of {', '.join(BUDGET_TWISTS)}, got "
                              f"{request.budget_twist!r}", param="budget_twist", code="invalid_value")
        options["budget_twist"] = request.budget_twist
    if request.masks is not None:
        if request.masks not in MASK_MODES:
            raise bad_request(f"masks must be one of {', '.join(MASK_MODES)}, got {request.masks!r}",
                              param="masks", code="invalid_value")
        options["masks"] = request.masks
    time_limit = limits.max_seconds
    if request.time_limit is not None:
        if not request.time_limit > 0:
            raise bad_request(f"time_limit must be positive, got {request.time_limit}", param="time_limit",
                              code="invalid_value")
        time_limit = min(time_limit, request.time_limit)
    options["time_limit"] = time_limit
    if request.stream_options is not None and not request.stream:
        raise bad_request("stream_options is only allowed with stream: true", param="stream_options",
                          code="invalid_value")
    return options


def _in_range(name: str, value: int, low: int, high: int) -> None:
    if value < low:
        raise bad_request(f"{name} must be at least {low}, got {value}", param=name, code="invalid_value")
    if value > high:
        raise bad_request(f"{name}={value} exceeds this server's limit of {high}", param=name,
                          code="limit_exceeded")
