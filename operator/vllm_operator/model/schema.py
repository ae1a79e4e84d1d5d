"""The CRDs in `charts/vllm/crds/` (the single source) as the operator and tests see them:
their OpenAPI schemas and the defaults the API server applies from them."""

from __future__ import annotations

import copy
from functools import cache
from importlib import resources
from typing import Any

import yaml

CRD_FILES = {
    "VLLMDeployment": "vllmdeployments.serving.vllm.ai.yaml",
    "LoraAdapter": "loraadapters.serving.vllm.ai.yaml",
}


@cache
def crd(kind: str) -> dict[str, Any]:
    text = resources.files("vllm_operator").joinpath("crds", CRD_FILES[kind]).read_text()
    return yaml.safe_load(text)


def openapi_schema(kind: str) -> dict[str, Any]:
    (version,) = crd(kind)["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def with_defaults(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of `obj` with the schema's defaults filled in, as the API server's structural
    defaulting does: a default applies where the field is missing and its parent exists."""
    out = copy.deepcopy(obj)
    _default(openapi_schema(kind), out)
    return out


def _default(schema: dict[str, Any], value: Any) -> None:
    if isinstance(value, dict):
        for name, prop in (schema.get("properties") or {}).items():
            if name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
            if name in value:
                _default(prop, value[name])
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            _default(schema["items"], item)
