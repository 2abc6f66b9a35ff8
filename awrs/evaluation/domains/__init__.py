"""Registry of evaluation domains: one module per domain, imported when first used.

Adding a domain is adding ``awrs/evaluation/domains/<module>.py`` with a ``Domain`` subclass
named ``DOMAIN`` and one line in :data:`DOMAINS`.
"""

from __future__ import annotations

import importlib

from ...errors import ConfigError
from ..base import Domain

# domain name -> module in this package
DOMAINS: dict[str, str] = {
    "patterns": "patterns",
    "json": "json_schema",
    "json-free": "json_free_whitespace",
    "spider": "spider",
    "molecules": "molecules",
    "goal_inference": "goal_inference",
}


def get_domain(name: str) -> Domain:
    if name not in DOMAINS:
        raise ConfigError(f"unknown domain {name!r}; choose one of {', '.join(DOMAINS)}")
    module = importlib.import_module(f"{__name__}.{DOMAINS[name]}")
    return module.DOMAIN()
