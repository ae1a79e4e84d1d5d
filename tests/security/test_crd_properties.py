"""Any object the CRDs admit either works or is `InvalidSpec` with a message, never another
exception: property-based tests over VLLMDeployments and LoraAdapters generated from the CRDs'
own openAPIV3Schema (hypothesis-jsonschema), kept to what the API server would admit (`admit()`:
defaults, schema, CEL rules), then parsed and built by the operator. Every object built must be
valid Kubernetes: its schema (kubernetes_validate) and what a schema cannot say, the syntax of
names, labels and annotation keys (the API server's ObjectMeta validation); and its pods must
pass Pod Security's "restricted" profile unless the spec relaxes the security defaults
(vllm_testkit.pod_security).

Before the fix, `nvidia.com/gpu: "²"` passed the CRD and `str.isdigit()`, then `int()` raised
ValueError; names like `a-` or `Model` were admitted and built Services no API server takes.

The schema is OpenAPI v3.0 with Kubernetes extensions; for generation: `x-kubernetes-*` keys are
dropped (int-or-string is spelled out with anyOf in our CRDs); objects with declared properties
get no others (the API server prunes unknown fields); `x-kubernetes-preserve-unknown-fields`
objects (env, tolerations, affinity, NetworkPolicy peers, volumes, topology spread constraints
and their label selectors: Kubernetes' own types, passed to the children as they are and checked
by the API server there) get only their declared fields. A few
fields get hints besides their schema (URIs of every source that pass the CEL rules or nearly do,
S3 endpoints, digits from other scripts in
GPU quantities, managed flags in extraArgs, boundary report intervals, names of every shape), so
that the rules are exercised in 150 examples rather than filtered away; GPU counts and the pods'
security, volumes and placement get properties of their own (the broad one meets them in few of
its admitted examples).

Hypothesis runs derandomized (the same examples every run, from the test's name) without an
example database (.hypothesis/ keeps only Hypothesis' caches, git-ignored), 150 examples per
property, no deadline: about 45 s for this module.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from vllm_operator.model.adapters import (
    adapter_problems,
    lora_deployment,
    parse_adapter,
)
from vllm_operator.model.builders import build_all
from vllm_operator.model.schema import openapi_schema
from vllm_operator.model.spec import (
    MODEL_MOUNT_PATH,
    OWN_MOUNT_PATHS,
    OWN_VOLUMES,
    InvalidSpec,
    parse_deployment,
)
from vllm_testkit.admission import admit
from vllm_testkit.pod_security import pod_template, violations
from vllm_testkit.samples import GOOD, IMAGES

KUBERNETES_VERSION = "1.34"
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# --- the CRDs' schemas, for generation ----------------------------------------------------------


def _generation_schema(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_generation_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        k: _generation_schema(v)
        for k, v in schema.items()
        if not k.startswith("x-kubernetes-") and k not in ("description", "default")
    }
    if schema.get("type") == "object" and "additionalProperties" not in schema:
        out["additionalProperties"] = False  # pruned by the API server; preserved ones: see above
    if schema.get("type") == "integer":  # the API server's integers are int64
        out.setdefault("minimum", -(2**63))
        out.setdefault("maximum", 2**63 - 1)
    return out


def _either(*weighted: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, by weight (the first, the CRD's own, where Hypothesis shrinks to)."""
    total = sum(weight for weight, _ in weighted)

    @st.composite
    def pick(draw: st.DrawFn) -> Any:
        n = draw(st.integers(0, total - 1))
        for weight, strategy in weighted:
            if n < weight:
                return draw(strategy)
            n -= weight
        raise AssertionError("unreachable")

    return pick()


# Flags the operator sets, as a user might slip them into extraArgs.
MANAGED_SPELLINGS = [
    "--port", "--port=9000", "--po", "--host=0.0.0.0", "--admin-port", "--admin_port=9",
    "--api-key", "--root_path=/x", "--root-pa", "--uds=/tmp/s", "--model", "--served-model-name",
    "--enable-lora", "--no-enable-lora", "--max-loras=1", "--max_lora_rank", "--orca-formats",
    "--orca_grpc_port", "--shutdown-timeout=0", "--middleware", "--config", "-tp", "-tp=4",
    "--tensor-parallel-size", "--max-model-len.x", "--dtype", "--lora-allowed-roots",
]  # fmt: skip
# GPU counts as a CR may spell them: numbers, digits of other scripts (str.isdigit takes "²"
# and the Arabic-Indic 1, int() takes the latter but not "²"), signs, fractions.
_QUANTITY = _either(
    (1, st.integers(-2, 20)),
    (3, st.sampled_from(["1", "2", "0", "²", "\u0661", "\uff11", "1.5", "-1", "01", "1e3"])),
    (1, st.from_regex("[-0-9²³¹\u0661\u0662\uff13.]{1,3}", fullmatch=True)),
    (1, st.text(max_size=3)),
)
# Map keys: label keys of every shape (with a prefix, without, what no label key may be).
_LABEL_KEYS = st.one_of(
    st.from_regex(
        r"([a-z0-9]{1,5}(\.[a-z]{1,3})?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,6}[A-Za-z0-9])?",
        fullmatch=True,
    ),
    st.text(max_size=8),
)
# s3:// and oci:// URIs, for the sources' own property too.
_SOURCE_URIS = _either(
    # s3:// and oci:// URIs of the rules' forms ...
    (
        2,
        st.one_of(
            st.from_regex(
                r"s3://[a-z0-9][-a-z0-9.]{1,8}[a-z0-9](/[-A-Za-z0-9_.+=,@:~]{1,6}){0,3}/?",
                fullmatch=True,
            ),
            st.from_regex(
                r"oci://(localhost|[a-z]{1,5}\.[a-z]{2,3})(:[0-9]{1,4})?"
                r"(/[a-z0-9]{1,5}([._-][a-z0-9]{1,3})?){1,2}"
                r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,6}|@sha256:[a-f0-9]{64})?",
                fullmatch=True,
            ),
        ),
    ),
    # ... and near them: short or uppercase buckets, `.` and `..` segments, registries without
    # a dot, uppercase repositories.
    (
        1,
        st.one_of(
            st.from_regex(r"s3://[-a-zA-Z0-9.]{0,6}(/[a-z.]{0,3}){0,3}", fullmatch=True),
            st.from_regex(
                r"oci://[a-zA-Z0-9.:-]{1,12}(/[a-zA-Z0-9._-]{1,6}){0,2}"
                r"(:[A-Za-z0-9_.-]{0,6})?",
                fullmatch=True,
            ),
        ),
    ),
)

# URIs of every source, mostly of the forms the CEL rules take.
_MODEL_URIS = _either(
    (
        6,
        st.one_of(
            st.from_regex(
                r"hf://[A-Za-z0-9][A-Za-z0-9._-]{0,6}/[A-Za-z0-9][-A-Za-z0-9._]{0,6}",
                fullmatch=True,
            ),
            st.from_regex(
                r"pvc://[a-z0-9]([-a-z0-9]{0,6}[a-z0-9])?(/[-a-zA-Z0-9._/]{0,8})?",
                fullmatch=True,
            ),
            st.from_regex(r"/[-a-zA-Z0-9._/]{0,10}", fullmatch=True),
        ),
    ),
    (3, _SOURCE_URIS),
)

# Per field of a VLLMDeployment's spec: (weight of the CRD's own schema, hint, its weight).
_HINTS: dict[tuple[str, ...], tuple[int, st.SearchStrategy[Any], int]] = {
    ("model", "uri"): (1, _MODEL_URIS, 4),
    # Mostly a URI alone: the broad property meets spec.model.s3 (refused with any other scheme)
    # in a quarter of its models; a property of its own draws it (_model_deployments).
    ("model",): (1, st.fixed_dictionaries({"uri": _MODEL_URIS}), 3),
    # spec.model.s3's endpoint: URLs of the rule's form and others (its own strings are mostly
    # refused); the block itself with any URI (the rule keeps it to s3:// ones).
    ("model", "s3", "endpoint"): (
        1,
        st.sampled_from(
            [
                "http://minio.storage:9000",
                "https://s3.example.com/base/",
                "http://[fd00::1]:9000",
                "https://10.0.0.1",
                "minio:9000",
                "ftp://minio",
                "http://a b",
                "http://",
            ]
        ),
        6,
    ),
    ("resources",): (
        1,
        st.fixed_dictionaries(
            {"limits": st.fixed_dictionaries({"nvidia.com/gpu": _QUANTITY})},
            optional={
                "requests": st.fixed_dictionaries({}, optional={"nvidia.com/gpu": _QUANTITY})
            },
        ),
        3,
    ),
    ("engine", "extraArgs", "[]"): (
        6,
        st.one_of(
            st.sampled_from(MANAGED_SPELLINGS),
            st.from_regex(r"--?[a-z_]{1,8}(-[a-z]{1,6})?([=.][a-z0-9]{0,3})?", fullmatch=True),
        ),
        1,
    ),
    ("orca", "minReportInterval"): (
        3,
        st.sampled_from(["0", "0.0", "00", "86400", "86399.99", "0.001", "100000"]),
        1,
    ),
    # The pods' volumes: the operator's names and paths (and those above them), paths with `.`
    # components, mounts of volumes that exist and of ones that do not, users that are root.
    ("volumes", "[]", "name"): (3, st.sampled_from([*OWN_VOLUMES, "data", "weights"]), 1),
    ("volumeMounts", "[]", "mountPath"): (
        1,
        _either(
            (1, st.sampled_from([*OWN_MOUNT_PATHS, MODEL_MOUNT_PATH, "/home/vllm/x"])),
            (4, st.from_regex(r"(/[a-z]{1,4}){1,3}", fullmatch=True)),
        ),
        3,
    ),
    ("volumeMounts", "[]", "subPath"): (
        3,
        st.from_regex(r"[a-z.]{1,3}(/[a-z]{1,3})?", fullmatch=True),
        1,
    ),
    # Mostly one node (most drawn splits are refused), sometimes groups, and splits that only
    # the operator can judge (GPUs given in the resources, which the CRD's rules cannot read).
    ("parallelism",): (
        1,
        st.sampled_from(
            [
                {},
                {"tensor": 1},
                {"tensor": 4},
                {"nodes": 2, "tensor": 2},
                {"nodes": 2, "pipeline": 2},
                {"nodes": 2, "tensor": 3},
                {"nodes": 1},
            ]
        ),
        4,
    ),
    ("podSecurityContext", "runAsUser"): (1, st.sampled_from([0, 1000, 65532]), 2),
    ("securityContext", "runAsUser"): (1, st.sampled_from([0, 1000]), 2),
    ("topologySpreadConstraints", "[]", "topologyKey"): (1, _LABEL_KEYS, 3),
    # The broad property leaves these mostly empty (their rules refuse most drawn values, which
    # would starve it of admitted objects); a property of their own draws them (_pod_deployments).
    **{
        (field,): (
            1,
            st.just([] if field in ("volumeMounts", "topologySpreadConstraints") else {}),
            3,
        )
        for field in (
            "podSecurityContext",
            "securityContext",
            "volumeMounts",
            "topologySpreadConstraints",
        )
    },
}


def _from_crd_schema(
    schema: dict[str, Any], path: tuple[str, ...], hinted: bool = True
) -> st.SearchStrategy[Any]:
    """`from_schema`, but objects with declared properties as fixed dictionaries of their
    properties' strategies (built once: hypothesis-jsonschema rebuilds an object's property
    strategies on every draw, a tenth of a second for a VLLMDeployment), lists of them too,
    and the hints mixed in (not `path`'s own with `hinted=False`)."""
    if schema.get("type") == "object" and schema.get("properties"):
        required = set(schema.get("required", ()))
        fields = {k: _from_crd_schema(v, (*path, k)) for k, v in schema["properties"].items()}
        strategy = st.fixed_dictionaries(
            {k: v for k, v in fields.items() if k in required},
            optional={k: v for k, v in fields.items() if k not in required},
        )
    elif schema.get("type") == "object":
        values = schema.get("additionalProperties")
        if isinstance(values, dict):  # a map: labels, annotations, resources
            strategy = st.dictionaries(
                _LABEL_KEYS, _from_crd_schema(values, (*path, "{}")), max_size=3
            )
        else:
            strategy = st.just({})  # nothing declared (preserved fields: see the module's doc)
    elif schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        items = _from_crd_schema(schema["items"], (*path, "[]"))
        size = {
            "min_size": schema.get("minItems", 0),
            "max_size": min(schema.get("maxItems", 5), 5),
        }
        if schema.get("uniqueItems"):
            strategy = st.lists(items, unique_by=repr, **size)
        else:
            strategy = st.lists(items, **size)
    else:
        strategy = from_schema(schema)
    if hinted and path in _HINTS:
        own, hint, weight = _HINTS[path]
        strategy = _either((own, strategy), (weight, hint))
    return strategy


@functools.cache
def _spec_schema(kind: str) -> dict[str, Any]:
    return _generation_schema(openapi_schema(kind))["properties"]["spec"]


@functools.cache
def _strategy(kind: str) -> st.SearchStrategy[Any]:
    hinted = kind == "VLLMDeployment"
    return _from_crd_schema(_spec_schema(kind), () if hinted else ("-",))


_NAMES = (
    st.from_regex(r"[a-z]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True),
    st.from_regex(r"[a-z][-a-z0-9]{58,66}", fullmatch=True),  # about the limit
    st.from_regex(r"[-a-zA-Z0-9._]{1,12}", fullmatch=True),  # what a Service cannot carry
)


@st.composite
def _custom_resources(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    return {
        "apiVersion": "serving.vllm.ai/v1alpha1",
        "kind": kind,
        # Mostly names a Service can carry; some about the limit or beyond it.
        "metadata": {
            "name": draw(_either((8, _NAMES[0]), (1, _NAMES[1]), (1, _NAMES[2]))),
            "namespace": "models",
            "uid": "uid-1",
            "generation": 1,
        },
        "spec": draw(_strategy(kind)),
    }


def vllm_deployments() -> st.SearchStrategy[dict[str, Any]]:
    return _custom_resources("VLLMDeployment")


def lora_adapters() -> st.SearchStrategy[dict[str, Any]]:
    return _custom_resources("LoraAdapter")


# --- what the API server checks beyond the schemas: ObjectMeta syntax ---------------------------

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def _qualified_name(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and not (len(prefix) <= 253 and _SUBDOMAIN.fullmatch(prefix)):
        return False
    return len(name) <= 63 and bool(_NAME_PART.fullmatch(name))


def _labels_problems(where: str, labels: dict[str, str] | None) -> list[str]:
    problems = []
    for key, value in (labels or {}).items():
        if not _qualified_name(key):
            problems.append(f"{where}: label key {key!r}")
        if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            problems.append(f"{where}: label value {value!r}")
    return problems


def meta_problems(obj: dict[str, Any]) -> list[str]:
    """apimachinery's checks of an object's names, labels and annotation keys (and of the pod
    template's, the selectors' and the node selector's)."""
    meta, kind = obj["metadata"], obj["kind"]
    name_ok = (
        len(meta["name"]) <= 63 and _DNS_1035.fullmatch(meta["name"])
        if kind == "Service"
        else len(meta["name"]) <= 253 and _SUBDOMAIN.fullmatch(meta["name"])
    )
    problems = [] if name_ok else [f"{kind} name {meta['name']!r}"]
    if not (len(meta["namespace"]) <= 63 and _DNS_LABEL.fullmatch(meta["namespace"])):
        problems.append(f"namespace {meta['namespace']!r}")
    problems += _labels_problems(f"{kind} labels", meta.get("labels"))
    problems += [
        f"{kind} annotation {k!r}" for k in meta.get("annotations") or {} if not _qualified_name(k)
    ]
    spec = obj.get("spec") or {}
    selector = spec.get("selector")
    if isinstance(selector, dict):
        problems += _labels_problems(f"{kind} selector", selector.get("matchLabels", selector))
    templates = {
        "Deployment": lambda: [spec["template"]],
        "LeaderWorkerSet": lambda: _lws_templates(obj),
    }
    for template in templates.get(kind, list)():
        problems += _labels_problems("pod labels", template["metadata"].get("labels"))
        annotations = template["metadata"].get("annotations") or {}
        problems += [f"pod annotation {k!r}" for k in annotations if not _qualified_name(k)]
        problems += _labels_problems("nodeSelector", template["spec"].get("nodeSelector"))
    return problems


@pytest.fixture(scope="module", autouse=True)
def _kubernetes_schemas_read_once():
    """kubernetes_validate reads its schema files (megabytes of JSON) on every call: once here."""
    original = kubernetes_validate.utils.schema_contents
    kubernetes_validate.utils.schema_contents = functools.cache(original)
    yield
    kubernetes_validate.utils.schema_contents = original


@pytest.fixture(scope="module", autouse=True)
def _cel_rules_compiled_once():
    """`admit()` builds a cel-python environment (its parser) and compiles every rule on every
    call (70 ms); here one environment and one program per rule, for the whole module (made
    before any test runs: it raises the recursion limit, which Hypothesis warns about)."""
    shared, programs = celpy.Environment(), {}

    class OneEnvironment:
        def compile(self, text: str) -> str:
            return text

        def program(self, text: str) -> Any:
            if text not in programs:
                programs[text] = shared.program(shared.compile(text))
            return programs[text]

    original = celpy.Environment
    celpy.Environment = OneEnvironment
    yield
    celpy.Environment = original


def assert_valid_kubernetes(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        assert meta_problems(obj) == [], obj
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # Prometheus Operator CRDs: not in the Kubernetes schemas
        if obj["kind"] == "LeaderWorkerSet":  # LWS's CRD (tests/operator/test_multinode.py)
            jsonschema.validate(obj, LWS_SCHEMA)
            for template in _lws_templates(obj):  # and each role's pods, as Kubernetes has them
                pod_template = {
                    "apiVersion": "v1",
                    "kind": "PodTemplate",
                    "metadata": {"name": obj["metadata"]["name"], "namespace": "models"},
                    "template": template,
                }
                kubernetes_validate.validate(pod_template, KUBERNETES_VERSION, strict=True)
            continue
        if obj["kind"] == "InferencePool":  # GIE's CRD (tests/operator/test_builders.py)
            jsonschema.validate(obj, GIE_SCHEMA)
            ref = obj["spec"].get("endpointPickerRef") or {"port": "none needed"}
            assert ref.get("kind", "Service") != "Service" or "port" in ref, obj
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


GIE_SCHEMA = json.loads(
    (Path(__file__).parents[1] / "operator" / "gie-inferencepool-v1.schema.json").read_text()
)
LWS_SCHEMA = json.loads(
    (Path(__file__).parents[1] / "operator" / "lws-leaderworkerset-v1.schema.json").read_text()
)


def _lws_templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    templates = obj["spec"]["leaderWorkerTemplate"]
    return [templates["leaderTemplate"], templates["workerTemplate"]]


# Fields with which a spec may leave Pod Security's "restricted" profile (its author's choice,
# which the namespace's admission judges): the security overrides. Generated volumes have no
# source (the module's doc), so they are the emptyDirs the API server makes of them.
RELAXING = ("podSecurityContext", "securityContext")


def _profile_violations(obj: dict[str, Any]) -> list[Any]:
    """`violations`, but for the image volume of an oci:// model: the profile's page does not
    list image volumes, which Pod Security admission admits in "restricted" since Kubernetes
    1.33 (kubernetes/kubernetes#130394)."""
    volumes = pod_template(obj)[1].get("volumes") or ()
    model_image = {
        f"spec.volumes[{i}]: image" for i, v in enumerate(volumes) if v["name"] == "model"
    }
    return [
        v for v in violations(obj) if not (v.control == "Volume Types" and v.field in model_image)
    ]


def assert_restricted_unless_relaxed(body: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    """Pods of a spec that does not relax the defaults pass the "restricted" profile."""
    if any(field in body["spec"] for field in RELAXING):
        return
    for obj in objects:
        if obj["kind"] == "Deployment":
            assert _profile_violations(obj) == [], body["spec"]
        if obj["kind"] == "LeaderWorkerSet":
            for template in _lws_templates(obj):
                assert _profile_violations({"kind": "Pod", **template}) == [], body["spec"]


# --- the properties -----------------------------------------------------------------------------


def build_or_refuse(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The objects a VLLMDeployment builds into, or None for `InvalidSpec` (with a message)."""
    try:
        spec = parse_deployment(body, IMAGES)
    except InvalidSpec as e:
        assert str(e)
        return None
    return build_all(
        spec,
        monitoring_available=True,
        operator_namespace="vllm-system",
        inference_pool_available=True,
    )


@PROPERTY
@given(vllm_deployments())
def test_any_admitted_vllmdeployment_builds_valid_objects_or_is_an_invalid_spec(body):
    assume(admit("VLLMDeployment", body) == [])
    objects = build_or_refuse(body)
    if objects is not None:
        assert_valid_kubernetes(objects)
        assert_restricted_unless_relaxed(body, objects)


@st.composite
def _gpu_deployments(draw: st.DrawFn) -> dict[str, Any]:
    """A good VLLMDeployment with resources (and GPU settings) from the CRD's schema: the
    broad property above meets `resources` in few of its examples."""
    body = copy.deepcopy(GOOD[draw(st.sampled_from(sorted(GOOD)))])
    fields = _spec_schema("VLLMDeployment")["properties"]
    body["spec"]["resources"] = draw(_from_crd_schema(fields["resources"], ("resources",)))
    for field in ("accelerator", "gpusPerReplica"):
        if draw(st.booleans()):
            body["spec"][field] = draw(from_schema(fields[field]))
        else:
            body["spec"].pop(field, None)
    body["spec"].pop("engine", None)  # its tensorParallelSize would refuse most GPU counts
    return body


@PROPERTY
@given(_gpu_deployments())
def test_any_admitted_gpu_count_builds_valid_objects_or_is_an_invalid_spec(body):
    assume(admit("VLLMDeployment", body) == [])
    objects = build_or_refuse(body)
    if objects is not None:
        assert_valid_kubernetes(objects)
        assert_restricted_unless_relaxed(body, objects)


# The fields of the pods' security, volumes and placement (the broad property meets them in few
# admitted examples: most of its objects are refused for another field).
POD_FIELDS = (
    "podSecurityContext", "securityContext", "shmSize", "volumes", "volumeMounts",
    "topologySpreadConstraints", "schedulerName",
)  # fmt: skip


@st.composite
def _pod_deployments(draw: st.DrawFn) -> dict[str, Any]:
    """A good VLLMDeployment with the pod fields drawn from the CRD's schema (and the hints)."""
    body = copy.deepcopy(GOOD[draw(st.sampled_from(sorted(GOOD)))])
    fields = _spec_schema("VLLMDeployment")["properties"]
    for field in POD_FIELDS:
        if draw(st.booleans()):
            body["spec"][field] = draw(_from_crd_schema(fields[field], (field,), hinted=False))
    # Mostly mounts of volumes there are (the rules' other side: names of none).
    mounts = body["spec"].get("volumeMounts") or ()
    if mounts and draw(st.integers(0, 7)):
        volumes = body["spec"].setdefault("volumes", [])
        if not volumes:
            volumes.append({"name": "data"})
        for mount in mounts:
            mount["name"] = draw(st.sampled_from([volume["name"] for volume in volumes]))
    return body


@PROPERTY
@given(_pod_deployments())
def test_any_admitted_pod_setting_builds_valid_objects_or_is_an_invalid_spec(body):
    assume(admit("VLLMDeployment", body) == [])
    objects = build_or_refuse(body)
    if objects is not None:
        assert_valid_kubernetes(objects)
        assert_restricted_unless_relaxed(body, objects)


def _deployments_for_adapters() -> list[dict[str, Any] | None]:
    """The deployments a LoraAdapter may name: none, one without LoRA, an invalid one, one with
    LoRA and allowed roots, one allowing the hub."""
    with_roots = copy.deepcopy(GOOD["gpu-everything"])
    with_roots["spec"]["lora"]["allowedSourceRoots"] = ["/adapters", "/mnt/a/"]
    with_hub = copy.deepcopy(GOOD["gpu-everything"])
    with_hub["spec"]["lora"]["allowHub"] = True
    invalid = copy.deepcopy(GOOD["cpu-tiny"])
    invalid["spec"]["resources"] = {"limits": {"nvidia.com/gpu": "²"}}
    return [None, GOOD["gpu-hf-minimal"], invalid, GOOD["gpu-everything"], with_roots, with_hub]


@PROPERTY
@given(lora_adapters())
def test_any_admitted_loraadapter_is_served_or_has_a_problem(adapter_body):
    assume(admit("LoraAdapter", adapter_body) == [])
    adapter = parse_adapter(adapter_body)
    for body in _deployments_for_adapters():
        spec, unusable = lora_deployment(adapter.deployment, body, IMAGES)
        assert (spec is None) != (unusable is None)
        problems = adapter_problems([adapter], spec, unusable)
        assert set(problems) <= {adapter.name}
        assert all(isinstance(p, str) and p for p in problems.values())


def test_the_hints_find_what_the_rules_are_for():
    """The generated objects do reach the rules: refused ones and admitted ones of each kind."""
    seen: dict[str, int] = {"admitted": 0, "refused": 0, "invalid": 0, "built": 0}

    @settings(PROPERTY, max_examples=100)
    @given(vllm_deployments())
    def sample(body):
        if admit("VLLMDeployment", body):
            seen["refused"] += 1
            return
        seen["admitted"] += 1
        seen["built" if build_or_refuse(body) is not None else "invalid"] += 1

    sample()
    assert min(seen.values()) > 0, seen


@st.composite
def _model_deployments(draw: st.DrawFn) -> dict[str, Any]:
    """A good VLLMDeployment with spec.model drawn from the CRD's schema (and the hints on its
    fields): the broad property meets spec.model.s3 in few admitted examples."""
    body = copy.deepcopy(GOOD[draw(st.sampled_from(sorted(GOOD)))])
    schema = _spec_schema("VLLMDeployment")["properties"]["model"]
    model = draw(_from_crd_schema(schema, ("model",), hinted=False))
    if draw(st.integers(0, 3)):  # mostly the newer sources, whose rules are the longest
        model["uri"] = draw(_SOURCE_URIS)
    # The store mostly where the rule takes it (an s3:// URI), sometimes elsewhere.
    if model["uri"].startswith("s3://") and draw(st.booleans()):
        store = schema["properties"]["s3"]
        model["s3"] = draw(_from_crd_schema(store, ("model", "s3"), hinted=False))
    elif not model["uri"].startswith("s3://") and draw(st.integers(0, 3)):
        model.pop("s3", None)
    body["spec"]["model"] = model
    return body


@settings(PROPERTY, max_examples=60)  # the model alone varies: fewer examples cover it
@given(_model_deployments())
def test_any_admitted_model_source_builds_valid_objects_or_is_an_invalid_spec(body):
    assume(admit("VLLMDeployment", body) == [])
    objects = build_or_refuse(body)
    if objects is not None:
        assert_valid_kubernetes(objects)
        assert_restricted_unless_relaxed(body, objects)


def test_the_hints_reach_every_model_source():
    """s3:// (with a store) and oci:// URIs are admitted and built, and refused too."""
    seen = dict.fromkeys(("s3 store built", "oci built", "s3 refused", "oci refused"), 0)

    @settings(PROPERTY, max_examples=100)
    @given(_model_deployments())
    def sample(body):
        model = body["spec"]["model"]
        scheme = model["uri"].split("://")[0]
        if scheme not in ("s3", "oci"):
            return
        if admit("VLLMDeployment", body):
            seen[f"{scheme} refused"] += 1
        elif build_or_refuse(body) is not None and (scheme == "oci" or "s3" in model):
            seen[f"{scheme} {'store ' if scheme == 's3' else ''}built"] += 1

    sample()
    assert min(seen.values()) > 0, seen
