"""The CRDs (charts/vllm/crds, the single source): valid CRDs, structural schemas described
field by field, and sample objects accepted or rejected as the API server would: the OpenAPI
schema checked with jsonschema, the CEL rules evaluated with cel-python."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from vllm_operator.model import spec as spec_module
from vllm_operator.model.schema import crd, openapi_schema, with_defaults
from vllm_operator.model.spec import InvalidSpec, parse_deployment
from vllm_testkit.admission import admit
from vllm_testkit.samples import GOOD, IMAGES, vllmd

KINDS = ("VLLMDeployment", "LoraAdapter")


def lora(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "serving.vllm.ai/v1alpha1",
        "kind": "LoraAdapter",
        "metadata": {"name": "a", "namespace": "models"},
        "spec": spec,
    }


# --- the CRDs themselves -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_crd_is_a_valid_kubernetes_object(kind: str):
    kubernetes_validate.validate(crd(kind), "1.34", strict=True)


def _undescribed(schema: dict[str, Any], path: str) -> list[str]:
    missing = [] if "description" in schema or path.endswith(".metadata") else [path]
    for name, prop in (schema.get("properties") or {}).items():
        missing += _undescribed(prop, f"{path}.{name}")
    if isinstance(schema.get("items"), dict) and schema["items"].get("properties"):
        missing += _undescribed(schema["items"], f"{path}[]")
    return missing


@pytest.mark.parametrize("kind", KINDS)
def test_every_field_is_described_for_kubectl_explain(kind: str):
    assert _undescribed(openapi_schema(kind), kind) == []


def test_vllmdeployment_names_subresources_and_columns():
    spec = crd("VLLMDeployment")["spec"]
    assert spec["names"]["shortNames"] == ["vllmd"]
    assert "vllm" in spec["names"]["categories"]
    (version,) = spec["versions"]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert "status" in version["subresources"]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert {"Model", "Ready", "Age"} <= columns.keys()
    assert columns["URL"]["priority"] == 1


def test_loraadapter_names():
    spec = crd("LoraAdapter")["spec"]
    assert spec["names"]["shortNames"] == ["lora"]
    (version,) = spec["versions"]
    assert "status" in version["subresources"]


# --- objects -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_samples_are_admitted(name: str):
    assert admit("VLLMDeployment", GOOD[name]) == []


def test_gpus_from_resources_allow_as_much_tensor_parallelism():
    """As in any pod spec, GPUs may come from resources; the parser checks what CEL cannot."""
    gpus = {"model": {"uri": "/m"}, "resources": {"limits": {"nvidia.com/gpu": 2}}}
    two = vllmd("m", gpus | {"engine": {"tensorParallelSize": 2}})
    assert admit("VLLMDeployment", two) == []
    assert parse_deployment(two, IMAGES).engine.tensor_parallel_size == 2
    four = vllmd("m", gpus | {"engine": {"tensorParallelSize": 4}})
    with pytest.raises(InvalidSpec, match="tensorParallelSize 4 exceeds the 2 GPUs"):
        parse_deployment(four, IMAGES)


BAD = {
    "no model": ({}, "model"),
    "unknown scheme": (
        {"model": {"uri": "gs://bucket/m"}},
        "must start with hf://, s3://, oci://, pvc:// or /",
    ),
    "hf without org": ({"model": {"uri": "hf://llama"}}, "an hf:// model URI is hf://ORG/NAME"),
    "pvc without claim": ({"model": {"uri": "pvc:///m"}}, "needs a claim name"),
    "bad served name": ({"model": {"uri": "/m", "servedName": "a b"}}, "does not match"),
    "negative replicas": ({"model": {"uri": "/m"}, "replicas": -1}, "less than the minimum"),
    "cpu with gpus": (
        {"model": {"uri": "/m"}, "accelerator": "CPU", "gpusPerReplica": 1},
        "accelerator CPU runs without GPUs",
    ),
    "gpu without gpus": (
        {"model": {"uri": "/m"}, "gpusPerReplica": 0},
        "accelerator GPU needs gpusPerReplica of at least 1",
    ),
    "tensor parallel above gpus": (
        {"model": {"uri": "/m"}, "gpusPerReplica": 2, "engine": {"tensorParallelSize": 4}},
        "tensorParallelSize cannot exceed gpusPerReplica",
    ),
    "tensor parallel above the default gpu": (
        {"model": {"uri": "/m"}, "engine": {"tensorParallelSize": 2}},
        "tensorParallelSize cannot exceed gpusPerReplica",
    ),
    "lora rank not supported by vLLM": (
        {"model": {"uri": "/m"}, "lora": {"enabled": True, "maxRank": 24}},
        "is not one of",
    ),
    "orca port clash": (
        {"model": {"uri": "/m"}, "orca": {"grpcPort": 8000}},
        "orca.grpcPort must differ from port",
    ),
    "admin port clash": (
        {"model": {"uri": "/m"}, "port": 9000, "adminPort": 9000},
        "adminPort must differ from port",
    ),
    "admin port clashes with the default API port": (
        {"model": {"uri": "/m"}, "adminPort": 8000},
        "adminPort must differ from port",
    ),
    "orca port clashes with the admin port": (
        {"model": {"uri": "/m"}, "orca": {"grpcPort": 8001}},
        "orca.grpcPort must differ from adminPort",
    ),
    "unknown orca format": ({"model": {"uri": "/m"}, "orca": {"formats": ["XML"]}}, "not one of"),
    "gpu memory above 1": (
        {"model": {"uri": "/m"}, "engine": {"gpuMemoryUtilization": 1.5}},
        "greater than the maximum",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_vllmdeployments_are_rejected_with_a_clear_message(case: str):
    spec, expected = BAD[case]
    errors = admit("VLLMDeployment", vllmd("m", spec))
    assert any(expected in e for e in errors), errors


def test_loraadapter_rules():
    good = {"deploymentRef": {"name": "llama"}, "source": {"uri": "/adapters/sql"}}
    assert admit("LoraAdapter", lora(good)) == []
    hub = {**good, "source": {"uri": "hf://org/adapter"}}
    assert admit("LoraAdapter", lora(hub)) == []
    relative = {**good, "source": {"uri": "adapters/sql"}}
    assert any("absolute path or hf://" in e for e in admit("LoraAdapter", lora(relative)))
    escape = {**good, "source": {"uri": "/adapters/../etc"}}
    assert any("must not contain '..'" in e for e in admit("LoraAdapter", lora(escape)))
    moved = copy.deepcopy(good)
    moved["deploymentRef"]["name"] = "other"
    errors = admit("LoraAdapter", lora(moved), old=with_defaults("LoraAdapter", lora(good)))
    assert any("deploymentRef.name is immutable" in e for e in errors)
    named = {**good, "adapterName": "sql"}
    renamed = {**good, "adapterName": "sql2"}
    old = with_defaults("LoraAdapter", lora(named))
    assert admit("LoraAdapter", lora(named), old=old) == []
    assert any(
        "adapterName is immutable" in e for e in admit("LoraAdapter", lora(renamed), old=old)
    )
    assert any("adapterName is immutable" in e for e in admit("LoraAdapter", lora(good), old=old))


# --- model sources: the CRD's rules and the operator's checks agree --------------------------------

S3_FORM = "an s3:// model URI is s3://BUCKET/PREFIX"
OCI_FORM = "an oci:// model URI is oci://REGISTRY/REPO[:TAG|@sha256:DIGEST]"
ENDPOINT = "model.s3.endpoint must be an http:// or https:// URL"
# model -> the API server's message (the operator's, where it differs, after a `|`).
BAD_MODELS = [
    ({"uri": "gs://bucket/m"}, "model.uri must start with hf://, s3://, oci://, pvc:// or /"),
    ({"uri": "s3://ab/m"}, S3_FORM),  # a bucket name has 3 characters at least
    ({"uri": "s3://" + "b" * 64}, S3_FORM),  # and 63 at most
    ({"uri": "s3://Bucket/m"}, S3_FORM),
    ({"uri": "s3://bucket-/m"}, S3_FORM),
    ({"uri": "s3://-bucket"}, S3_FORM),
    ({"uri": "s3://bucket//m"}, S3_FORM),
    ({"uri": "s3://bucket/m m"}, S3_FORM),
    ({"uri": "s3://bucket/m\n"}, S3_FORM),
    ({"uri": "s3://bucket/a/../b"}, "without '.' or '..' segments"),
    ({"uri": "s3://bucket/a/.."}, "without '.' or '..' segments"),
    ({"uri": "s3://bucket/./a"}, "without '.' or '..' segments"),
    ({"uri": "oci://llama:v1"}, OCI_FORM),
    ({"uri": "oci://library/llama"}, "a host name with a dot (or localhost)"),
    ({"uri": "oci://[::1]:5000/m"}, OCI_FORM),
    ({"uri": "oci://ghcr.io"}, OCI_FORM),
    ({"uri": "oci://ghcr.io/Org/llama"}, "the repository in lowercase"),
    ({"uri": "oci://ghcr.io/org/llama:"}, OCI_FORM),
    ({"uri": "oci://ghcr.io/org/llama@sha256:abc"}, OCI_FORM),
    ({"uri": "oci://ghcr.io/org/llama:v1@sha256:" + "a" * 64}, OCI_FORM),
    ({"uri": "hf://org/m", "s3": {"region": "us-east-1"}}, "model.s3 goes with an s3:// model URI"),
    ({"uri": "/m", "s3": {}}, "model.s3 goes with an s3:// model URI"),
    # The server refuses --revision with s3:// (vllm-ext-serve exits 2): refused here first.
    ({"uri": "s3://bucket/m", "revision": "v2"}, "model.revision does not go with an s3://"),
    ({"uri": "s3://bucket", "s3": {"endpoint": "minio:9000"}}, ENDPOINT),
    ({"uri": "s3://bucket", "s3": {"endpoint": "ftp://minio"}}, ENDPOINT),
    ({"uri": "s3://bucket", "s3": {"endpoint": "http://a b"}}, ENDPOINT),
    ({"uri": "s3://bucket", "s3": {"region": "us east"}}, "does not match|is not a region name"),
    ({"uri": "s3://bucket", "s3": {"credentialsSecret": {}}}, "'name' is a required property|"),
    ({"uri": "s3://bucket", "s3": {"credentialsSecret": {"name": "A"}}}, "does not match|"),
]  # fmt: skip
GOOD_MODELS = [
    {"uri": "s3://abc"},
    {"uri": "s3://my.bucket-1/"},
    {"uri": "s3://" + "b" * 63 + "/a/b/c.safetensors"},
    {"uri": "s3://bucket/v1.0/x=y,z@1:2~3+4"},
    {"uri": "s3://bucket/a..b/.hidden"},  # dots within a segment are a name
    {"uri": "s3://bucket", "s3": {}},
    {"uri": "s3://bucket/m", "s3": {"endpoint": "https://s3.example.com:9000/base/",
                                    "region": "auto", "credentialsSecret": {"name": "s3-creds"}}},
    {"uri": "s3://bucket", "s3": {"endpoint": "http://[fd00::1]:9000"}},
    {"uri": "oci://localhost/m"},
    {"uri": "oci://localhost:5000/a/b/c:latest"},
    {"uri": "oci://ghcr.io/o/m"},
    {"uri": "oci://quay.io/org/my_model.v2-1:2024.01_rc"},
    {"uri": "oci://ghcr.io/org/llama@sha256:" + "0123456789abcdef" * 4},
    {"uri": "hf://org/name"},
    {"uri": "hf://org/name", "revision": "v2"},
    {"uri": "pvc://claim/path"},
    {"uri": "/models/llama"},
]  # fmt: skip


@pytest.mark.parametrize(("model", "messages"), BAD_MODELS, ids=lambda v: repr(v)[:60])
def test_model_sources_are_refused_alike_by_the_crd_and_the_operator(model, messages):
    api_server, _, operator = messages.partition("|")
    body = vllmd("m", {"model": model})
    errors = admit("VLLMDeployment", body)
    assert any(api_server in e for e in errors), errors
    if operator == "" and "|" in messages:
        return  # the schema's own (the operator reads the object the API server stored)
    with pytest.raises(InvalidSpec) as refused:
        parse_deployment(body, IMAGES)
    assert (operator or api_server) in str(refused.value)


@pytest.mark.parametrize("model", GOOD_MODELS, ids=lambda v: repr(v)[:60])
def test_model_sources_of_each_form_are_admitted_and_built(model):
    body = vllmd("m", {"model": model})
    assert admit("VLLMDeployment", body) == []
    assert parse_deployment(body, IMAGES).model.uri == model["uri"]


def test_the_crds_uri_rules_are_the_operators_patterns():
    """The rules hold the operator's patterns, each backslash doubled (a CEL string literal)."""
    model = openapi_schema("VLLMDeployment")["properties"]["spec"]["properties"]["model"]
    rules = " ".join(r["rule"] for r in model["properties"]["uri"]["x-kubernetes-validations"])
    for pattern in (
        spec_module.HF_URI_PATTERN, spec_module.PVC_URI_PATTERN, spec_module.S3_URI_PATTERN,
        spec_module.DOT_SEGMENT_PATTERN, spec_module.OCI_URI_PATTERN,
    ):  # fmt: skip
        assert f"self.matches('{pattern.replace(chr(92), chr(92) * 2)}')" in rules
    endpoint = model["properties"]["s3"]["properties"]["endpoint"]
    (rule,) = endpoint["x-kubernetes-validations"]
    assert rule["rule"] == (
        f"self.matches('{spec_module.S3_ENDPOINT_PATTERN.replace(chr(92), chr(92) * 2)}')"
    )
    region = model["properties"]["s3"]["properties"]["region"]
    assert region["pattern"] == spec_module.S3_REGION_PATTERN
