"""What an evaluation domain is: instances, a constraint per instance, and a metric per output."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..constraints.base import Constraint


@dataclass
class Instance:
    """One evaluation item.

    ``prompt`` is text or chat messages (``chat`` says whether a text prompt gets the chat
    template). ``skip`` is set when the item cannot be evaluated (malformed, missing file): the
    runner records it as skipped with this reason and goes on.
    """

    id: str
    prompt: Any = None
    chat: bool = False
    system: str | None = None
    data: dict = field(default_factory=dict)
    skip: str | None = None


class Domain:
    """Base class of an evaluation domain (one module per domain in ``awrs.evaluation.domains``).

    Subclasses set ``name`` and ``max_tokens`` and implement :meth:`instances`,
    :meth:`constraint` and :meth:`score`; :meth:`aggregate` may add instance-level metrics
    computed from all outputs (e.g. diversity).
    """

    name: str = ""
    max_tokens: int = 64  # default per domain (the paper-era limit where the notes give one)
    primary: str = "accuracy"  # what the "score" of an output means, for reports
    folder: str = ""  # its folder under a data root such as ../shared/data
    stops: tuple[str, ...] = ()  # tokens containing one of these also end a text (like EOS)

    def instances(self, data_dir: Path, *, seed: int) -> Iterator[Instance]:
        raise NotImplementedError

    def constraint(self, instance: Instance) -> Constraint:
        raise NotImplementedError

    def score(self, instance: Instance, text: str) -> dict:
        """Metric values of one output: ``{"score": float, "valid": bool, ...}``."""
        raise NotImplementedError

    def aggregate(self, instance: Instance, outputs: list[dict]) -> dict:
        return {}

    def close(self) -> None:
        """Release cached resources (database connections)."""
