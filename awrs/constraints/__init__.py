"""Constraints: incremental byte-level checks of texts and their prefixes."""

from .base import DEAD, Constraint, State
from .predicate import Predicate
from .regex import Regex

__all__ = ["DEAD", "Constraint", "Predicate", "Regex", "State"]
