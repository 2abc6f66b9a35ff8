"""The server's limits: how much one request, and one batch, may ask for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from ..errors import ConfigError
from ..generate import METHODS

#: ``rejection`` is left out by default: it runs after the batch, one request at a time, and
#: ignores time limits and cancellation.
DEFAULT_METHODS = tuple(m for m in METHODS if m != "rejection")


@dataclass(frozen=True)
class Limits:
    """What the server accepts. A request that asks for more gets a 4xx error.

    Attributes:
        max_body_bytes: largest request body.
        max_tokens: largest ``max_tokens`` (tokens per particle).
        default_max_tokens: ``max_tokens`` when a request gives none (default: 64, or
            ``max_tokens`` if smaller).
        max_particles: largest ``particles`` of one request (default: 64, or
            ``max_batch_particles`` if smaller).
        default_particles: ``particles`` when a request gives none (default: 10, or
            ``max_particles`` if smaller; raised to ``n`` if smaller than ``n``).
        max_n: largest ``n`` (choices returned).
        max_seconds: run time allowed to one request (passed to the run as ``time_limit``;
            finished samples are kept when it is reached). Time spent queued is not counted.
        max_batch_particles: total particles of the requests run together in one batch.
        max_pending: requests queued at once; more get 429.
        max_prompt_tokens: longest prompt, in tokens (``None``: only the model's context).
        batch_window: seconds the worker waits after an idle spell before starting a batch,
            so that requests arriving together run together.
        methods: the ``method`` values a request may choose.
    """

    max_body_bytes: int = 1_000_000
    max_tokens: int = 512
    default_max_tokens: int | None = None
    max_particles: int | None = None
    default_particles: int | None = None
    max_n: int = 16
    max_seconds: float = 60.0
    max_batch_particles: int = 256
    max_pending: int = 1024
    max_prompt_tokens: int | None = 4096
    batch_window: float = 0.005
    methods: tuple[str, ...] = DEFAULT_METHODS

    def __post_init__(self) -> None:
        if self.max_particles is None and isinstance(self.max_batch_particles, int):
            object.__setattr__(self, "max_particles", min(64, self.max_batch_particles))
        if self.default_max_tokens is None and isinstance(self.max_tokens, int):
            object.__setattr__(self, "default_max_tokens", min(64, self.max_tokens))
        if self.default_particles is None and isinstance(self.max_particles, int):
            object.__setattr__(self, "default_particles", min(10, self.max_particles))
        for name in ("max_body_bytes", "max_tokens", "default_max_tokens", "max_particles",
                     "default_particles", "max_n", "max_batch_particles", "max_pending"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"limit {name} must be a positive integer, got {value!r}")
        if self.max_prompt_tokens is not None and (
            not isinstance(self.max_prompt_tokens, int) or self.max_prompt_tokens < 1
        ):
            raise ConfigError(f"limit max_prompt_tokens must be a positive integer or None, got {self.max_prompt_tokens!r}")
        if not self.max_seconds > 0:
            raise ConfigError(f"limit max_seconds must be positive, got {self.max_seconds!r}")
        if not self.batch_window >= 0:
            raise ConfigError(f"limit batch_window must be >= 0, got {self.batch_window!r}")
        if self.default_max_tokens > self.max_tokens:
            raise ConfigError(f"default_max_tokens {self.default_max_tokens} exceeds max_tokens {self.max_tokens}")
        if self.default_particles > self.max_particles:
            raise ConfigError(f"default_particles {self.default_particles} exceeds max_particles {self.max_particles}")
        if self.max_particles > self.max_batch_particles:
            raise ConfigError(
                f"max_particles {self.max_particles} exceeds max_batch_particles {self.max_batch_particles}: "
                "such a request could never run"
            )
        methods = tuple(self.methods)
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise ConfigError(f"limit methods must name some of {', '.join(METHODS)}, got {list(self.methods)}")
        object.__setattr__(self, "methods", methods)

    @classmethod
    def from_options(cls, options: Limits | Mapping | None) -> Limits:
        """Limits from a :class:`Limits`, a dict of its fields, or ``None`` (the defaults)."""
        if options is None:
            return cls()
        if isinstance(options, Limits):
            return options
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise ConfigError(f"unknown server limits {unknown}; known: {sorted(names)}")
        return cls(**dict(options))

    def as_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}
