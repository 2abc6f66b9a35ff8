"""Constraints: incremental byte-level checks of texts and their prefixes."""

from .base import DEAD, Constraint, State
from .combinators import All, Scored
from .json_schema import JsonSchema
from .predicate import Predicate
from .regex import Regex

__all__ = ["DEAD", "All", "Constraint", "JsonSchema", "Predicate", "Regex", "Scored", "State"]
