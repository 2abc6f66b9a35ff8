"""DEAD, the state of a text that can no longer be completed, and the State type.

A module of its own so that both the constraint interface (``base.py``) and the checkers
(``checker.py``) can use it without importing each other.
"""

from __future__ import annotations

from typing import Any, Final


class _Dead:
    """Marker for a prefix that has no valid completion."""

    _instance: _Dead | None = None

    def __new__(cls) -> _Dead:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "DEAD"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "DEAD"


DEAD: Final = _Dead()
"""Returned by :meth:`Constraint.advance` when the text can no longer be completed."""

State = Any
