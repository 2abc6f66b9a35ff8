"""Exceptions raised by awrs. Every error derives from :class:`AwrsError`.

Configuration mistakes (a bad pattern, an unknown method) are also ``ValueError`` so that
callers who do not know awrs can still catch them.
"""

from __future__ import annotations


class AwrsError(Exception):
    """Base class of every awrs error."""


class ConfigError(AwrsError, ValueError):
    """Invalid user input: a pattern that does not compile, an unknown option, a bad value."""


class ConstraintError(AwrsError):
    """A constraint failed while checking text (for example a user predicate raised)."""


class ModelError(AwrsError):
    """A language model could not be found, loaded or run."""
