"""The API server's admission of custom resources, as far as it can be shown without one: the
CRD's defaults applied, the OpenAPI schema checked with jsonschema, the CEL rules evaluated with
cel-python (a CEL implementation from PyPI)."""

from __future__ import annotations

from typing import Any

import celpy
import jsonschema

from vllm_operator.model.schema import openapi_schema, with_defaults


def _as_jsonschema(schema: Any) -> Any:
    """OpenAPI v3.0 (as CRDs use it) -> JSON Schema draft 4: drop Kubernetes extensions,
    int-or-string is already spelled out with anyOf in our CRDs."""
    if isinstance(schema, dict):
        return {k: _as_jsonschema(v) for k, v in schema.items() if not k.startswith("x-kubernetes")}
    if isinstance(schema, list):
        return [_as_jsonschema(v) for v in schema]
    return schema


def _cel_rules(schema: dict[str, Any], value: Any, old: Any, path: str):
    """(path, rule, message, self, oldSelf) for every CEL rule whose field is present."""
    for rule in schema.get("x-kubernetes-validations") or []:
        yield path, rule, value, old
    if isinstance(value, dict):
        for name, prop in (schema.get("properties") or {}).items():
            if name in value:
                child_old = old.get(name) if isinstance(old, dict) else None
                yield from _cel_rules(prop, value[name], child_old, f"{path}.{name}")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            yield from _cel_rules(schema["items"], item, None, f"{path}[{i}]")


def admit(kind: str, obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """The API server's verdict on creating (or updating from `old`) `obj`: [] if admitted,
    else the messages. Defaults are applied first, as the API server does."""
    obj = with_defaults(kind, obj)
    schema = openapi_schema(kind)
    validator = jsonschema.Draft4Validator(_as_jsonschema(schema))
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(obj)]
    if errors:
        return errors
    env = celpy.Environment()
    for path, rule, value, old_value in _cel_rules(schema, obj, old, ""):
        if "oldSelf" in rule["rule"] and old_value is None:
            continue  # transition rules apply to updates only
        activation = {"self": celpy.json_to_cel(value)}
        if old_value is not None:
            activation["oldSelf"] = celpy.json_to_cel(old_value)
        result = env.program(env.compile(rule["rule"])).evaluate(activation)
        assert isinstance(result, celpy.celtypes.BoolType), f"{path}: {rule['rule']} -> {result!r}"
        if not result:
            errors.append(f"{path}: {rule['message']}")
    return errors
