"""JSON Schema: JSON texts valid under a schema, checked byte by byte.

``schema``: the :class:`JsonSchema` constraint and its exact check; ``lexer``: JSON syntax,
one reader per mode, over :class:`~.lexer.JsonState` tuples; ``branches``: the schema's live
branches and the events that prune them; ``compile`` and ``nodes``: schemas compiled into
frozen nodes; ``values``: the lexer's constants; ``hints``: the next-byte hint.
"""

from .schema import JsonSchema

__all__ = ["JsonSchema"]
