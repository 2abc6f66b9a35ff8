"""Constraints: incremental byte-level checks of texts and their prefixes."""

from .base import DEAD, All, Constraint, Scored, State
from .grammar import Grammar, Sql
from .json_schema import JsonSchema
from .predicate import Predicate
from .regex import Regex
from .smiles import Smiles

__all__ = [
    "DEAD", "All", "Constraint", "Grammar", "JsonSchema", "Predicate", "Regex", "Scored", "Smiles",
    "Sql", "State",
]
