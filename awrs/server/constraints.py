"""A request's constraint: from ``response_format`` or vLLM's ``guided_*`` fields, compiled, or
a 400 that names the field at fault."""

from __future__ import annotations

import json

from ..constraints import Predicate, Regex
from ..errors import AwrsError
from .errors import bad_request
from .schemas import _Common


def _any_text() -> Predicate:
    return Predicate(lambda text: True, name="any text")


def build_constraint(request: _Common):
    """The constraint a request asks for (``None`` fields ignored); errors are 400s."""
    given = []
    if request.guided_regex is not None:
        given.append("guided_regex")
    if request.guided_json is not None:
        given.append("guided_json")
    if request.guided_grammar is not None:
        given.append("guided_grammar")
    if request.guided_choice is not None:
        given.append("guided_choice")
    fmt = request.response_format
    if fmt is not None and fmt.type != "text":
        given.append("response_format")
    if len(given) > 1:
        raise bad_request(f"give at most one constraint; this request has {', '.join(given)}",
                          param=given[1], code="conflicting_constraints")
    if not given:
        return _any_text()
    field = given[0]
    if field == "guided_regex":
        return _compile(field, "regex", lambda: Regex(request.guided_regex))
    if field == "guided_choice":
        choices = request.guided_choice
        if not choices:
            raise bad_request("guided_choice must list at least one text", param=field, code="invalid_value")
        import regex as _regex

        pattern = "(?:" + "|".join(_regex.escape(c) for c in choices) + ")"
        return _compile(field, "choice", lambda: Regex(pattern))
    if field == "guided_grammar":
        def grammar():
            from ..constraints.grammar import Grammar

            return Grammar(request.guided_grammar)

        return _compile(field, "grammar", grammar)
    if field == "guided_json":
        schema = request.guided_json
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except ValueError as err:
                raise bad_request(f"guided_json is not valid JSON: {err}", param=field, code="invalid_schema") from None
        return _json_schema(field, schema)
    # response_format
    if fmt.type == "json_object":
        return _json_schema("response_format", {"type": "object"})
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise bad_request("response_format of type json_schema needs json_schema.schema",
                          param="response_format.json_schema", code="missing_field")
    return _json_schema("response_format.json_schema.schema", fmt.json_schema.schema_)


def _json_schema(param: str, schema):
    if not isinstance(schema, (dict, bool)):
        raise bad_request("a JSON schema must be an object or a boolean", param=param, code="invalid_schema")

    def build():
        from ..constraints.json_schema import JsonSchema

        return JsonSchema(schema, whitespace="compact")

    return _compile(param, "schema", build)


def _compile(param: str, what: str, build):
    try:
        return build()
    except ImportError as err:
        raise bad_request(f"{what} constraints are not available in this installation ({err})",
                          param=param, code="unsupported_constraint") from None
    except AwrsError as err:
        raise bad_request(str(err), param=param, code=f"invalid_{what}") from None
    except ValueError as err:
        raise bad_request(f"invalid {what}: {err}", param=param, code=f"invalid_{what}") from None
    except RecursionError:
        raise bad_request(f"invalid {what}: nested too deeply", param=param, code=f"invalid_{what}") from None
    except Exception as err:  # noqa: BLE001 -- a compiler failing on odd input is the input's fault
        raise bad_request(f"invalid {what}: {type(err).__name__}: {err}", param=param,
                          code=f"invalid_{what}") from None
