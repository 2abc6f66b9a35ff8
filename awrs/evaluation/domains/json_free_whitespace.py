"""JSON with the model's own spacing: the ``json`` domain, but the constraint lets whitespace
through between tokens (``whitespace="free"``, at most 16 bytes in a row).

The prompt's schemas are written with ``", "`` and ``": "``, and the model copies that spacing.
Under the ``json`` domain's compact constraint those tokens are invalid at every comma and
colon, so a structural step keeps little of the model's mass while a step inside a string
keeps nearly all of it; SMC's weights then favour lineages that stay inside long strings.
"""

from __future__ import annotations

from ...constraints.json_schema import JsonSchema
from ..base import Instance
from .json_schema import Json


class JsonFreeWhitespace(Json):
    name = "json-free"

    def constraint(self, instance: Instance):
        return JsonSchema(instance.data["schema"], whitespace="free")


DOMAIN = JsonFreeWhitespace
