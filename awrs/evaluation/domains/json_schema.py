"""JSON (paper notes §4.2): a JSON object valid under a JSONSchemaBench schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from ...constraints.json_schema import JsonSchema
from ..base import Domain, Instance

SYSTEM = (
    "You need to generate a JSON object that matches the schema below. "
    "Output the JSON object on a single line. DO NOT use multiple lines and DO NOT output any other text."
)
EXAMPLES = [  # (schema, object) few-shot pairs, written for this harness
    ({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
      "required": ["name", "age"]}, {"name": "Alice", "age": 31}),
    ({"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}},
      "active": {"type": "boolean"}}, "required": ["tags"]}, {"tags": ["red", "blue"], "active": True}),
]


def messages(schema_text: str) -> list[dict]:
    out = [{"role": "system", "content": SYSTEM}]
    for schema, obj in EXAMPLES:
        out += [{"role": "user", "content": json.dumps(schema)},
                {"role": "assistant", "content": json.dumps(obj, separators=(",", ":"))}]
    out.append({"role": "user", "content": schema_text})
    return out


def schema_files(data_dir: Path) -> list[Path]:
    """Schema files of a JSONSchemaBench folder: ``<split>/*.json``, or ``*.json`` in a split folder."""
    data_dir = Path(data_dir)
    direct = sorted(data_dir.glob("*.json"))
    if direct:
        return direct
    return sorted(p for split in sorted(data_dir.iterdir()) if split.is_dir() for p in split.glob("*.json"))


class Json(Domain):
    name = "json"
    folder = "jsonschemabench"
    max_tokens = 350
    primary = "schema-valid"

    def instances(self, data_dir: Path, *, seed: int):
        data_dir = Path(data_dir)
        files = schema_files(data_dir)
        if not files:
            raise FileNotFoundError(f"no schema files (*.json or <split>/*.json) under {data_dir}")
        for path in files:
            ident = str(path.relative_to(data_dir))
            try:
                text = path.read_text(encoding="utf-8")
                schema = json.loads(text)
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                yield Instance(ident, skip=f"unreadable schema: {err}")
                continue
            yield Instance(ident, prompt=messages(json.dumps(schema)), chat=True, data={"schema": schema})

    def constraint(self, instance: Instance):
        return JsonSchema(instance.data["schema"])

    def score(self, instance: Instance, text: str) -> dict:
        try:
            value = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            return {"score": 0.0, "valid": False}
        schema = instance.data["schema"]
        try:
            cls = jsonschema.validators.validator_for(schema)
            ok = cls(schema, format_checker=cls.FORMAT_CHECKER).is_valid(value)
        except Exception:  # noqa: BLE001 - an unusable schema scores 0, never crashes the run
            ok = False
        return {"score": float(ok), "valid": ok}


DOMAIN = Json
