"""Specs that cannot work are refused at admission (the CRD's rules, shown with `admit()`: the
schema, the defaults and the CEL rules as the API server applies them), and the same specs are
`InvalidSpec` when the operator parses them (objects stored before a rule existed; the emulated
API server in the operator tests applies no CEL). Each case worked before the fix:

- metadata.name must be a DNS-1035 label of at most 63 characters: it names the Service and is a
  label value on every child (`Test`, `a-`, `1a`, 64 characters were admitted).
- replicas at most 1000.
- orca.minReportInterval above 0 and below 86400 seconds, as vllm-ext-serve takes it ("0" and
  "86400" passed the pattern, then the pods crash-looped).
- engine.extraArgs must not set a flag the operator manages, in any spelling vLLM takes.
- label values (podLabels, nodeSelector, monitoring.labels, inferencePool.name) must be label
  values; label and annotation keys (which a CRD cannot check) are InvalidSpec.
- the pods' settings (fields added with their rules): volumes and volumeMounts leave the
  operator's volume names and mount paths alone (and the paths above them, and /models of pvc://
  models), mounts name volumes of spec.volumes, paths have no `.` or `..` components;
  `privileged` needs allowPrivilegeEscalation; a localhostProfile goes with type Localhost only;
  minDomains with DoNotSchedule. Duplicates (which the API server's list maps refuse) and root
  users under runAsNonRoot are InvalidSpec (test_pod_spec_checks.py).
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from vllm_operator.model import builders
from vllm_operator.model import spec as spec_module
from vllm_operator.model.schema import openapi_schema
from vllm_operator.model.spec import InvalidSpec, parse_deployment
from vllm_server_ext import cli as server_cli
from vllm_testkit.admission import admit
from vllm_testkit.samples import GOOD, IMAGES, vllmd

MODEL = {"uri": "hf://org/model"}


def refused(obj: dict[str, Any], message: str) -> None:
    errors = admit("VLLMDeployment", obj)
    assert any(message in e for e in errors), errors
    with pytest.raises(InvalidSpec):
        parse_deployment(obj, IMAGES)


def accepted(obj: dict[str, Any]) -> None:
    assert admit("VLLMDeployment", obj) == []
    parse_deployment(obj, IMAGES)


# --- metadata.name --------------------------------------------------------------------------------

NAME_MESSAGE = "metadata.name must be a DNS-1035 label"
BAD_NAMES = {
    "uppercase": "Llama",
    "ends with a dash": "llama-",
    "starts with a digit": "1llama",  # a Service name must start with a letter
    "a dot (a DNS subdomain, not a label)": "llama.v1",
    "an underscore": "llama_v1",
    "64 characters": "a" * 64,
    "a trailing newline": "llama\n",
}


@pytest.mark.parametrize("case", sorted(BAD_NAMES))
def test_names_the_service_cannot_carry_are_refused(case: str):
    refused(vllmd(BAD_NAMES[case], {"model": MODEL}), NAME_MESSAGE)


@pytest.mark.parametrize("name", ["a", "llama", "llama-3-1b", "a" * 63])
def test_dns_labels_are_admitted(name: str):
    accepted(vllmd(name, {"model": MODEL}))


def test_every_name_derived_from_the_longest_name_is_valid():
    """With a 63-character name: the Service (a DNS-1035 label), the claim `<name>-model-cache`
    and the other children (DNS subdomains, at most 253), the labels carrying the name (label
    values, at most 63)."""
    spec = copy.deepcopy(GOOD["gpu-everything"]["spec"])
    name = "q" * 63
    objects = builders.build_all(
        parse_deployment(vllmd(name, spec), IMAGES),
        monitoring_available=True,
        operator_namespace="vllm-system",
    )
    assert {o["kind"] for o in objects} >= {"Service", "PersistentVolumeClaim", "Deployment"}
    for obj in objects:
        meta = obj["metadata"]
        limit = 63 if obj["kind"] == "Service" else 253
        assert len(meta["name"]) <= limit, (obj["kind"], meta["name"])
        for value in meta["labels"].values():
            assert len(value) <= 63
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    for value in deployment["spec"]["template"]["metadata"]["labels"].values():
        assert len(value) <= 63


def test_the_name_rules_are_the_operators():
    rule, group_rule = openapi_schema("VLLMDeployment")["x-kubernetes-validations"]
    assert f"'{spec_module.NAME_PATTERN}'" in rule["rule"]
    assert f"size() <= {spec_module.MAX_NAME}" in rule["rule"]
    assert f"size() <= {spec_module.MAX_GROUP_NAME}" in group_rule["rule"]


# --- replicas -------------------------------------------------------------------------------------


def test_replicas_above_1000_are_refused():
    refused(vllmd("m", {"model": MODEL, "replicas": 1001}), "greater than the maximum")
    refused(vllmd("m", {"model": MODEL, "replicas": 10**9}), "greater than the maximum")
    accepted(vllmd("m", {"model": MODEL, "replicas": 1000}))


# --- orca.minReportInterval -----------------------------------------------------------------------

INTERVAL_MESSAGE = "orca.minReportInterval must be above 0 and below 86400 seconds"


@pytest.mark.parametrize("value", ["0", "0.0", "000", "86400", "86400.5", "100000"])
def test_report_intervals_the_server_refuses_are_refused(value: str):
    refused(vllmd("m", {"model": MODEL, "orca": {"minReportInterval": value}}), INTERVAL_MESSAGE)


@pytest.mark.parametrize("value", ["0.001", "0.5", "1", "86399", "86399.9"])
def test_report_intervals_the_server_takes_are_admitted(value: str):
    accepted(vllmd("m", {"model": MODEL, "orca": {"minReportInterval": value}}))


@pytest.mark.parametrize(
    "value", ["0", "0.0", "0.001", "1", "86399.9", "86400", "86400.5", "99999999999999999999"]
)
def test_the_crd_and_the_server_agree_on_report_intervals(value: str):
    """What vllm-ext-serve does with the flag the operator passes it."""
    admitted = (
        admit("VLLMDeployment", vllmd("m", {"model": MODEL, "orca": {"minReportInterval": value}}))
        == []
    )
    try:
        server_cli.parse_command_line(["/m", "--orca-oob-min-interval", value])
        started = True
    except SystemExit:
        started = False
    assert admitted == started


# --- engine.extraArgs -----------------------------------------------------------------------------

EXTRA_ARGS_MESSAGE = "engine.extraArgs must not set a flag the operator manages"
MANAGED_SPELLINGS = [
    "--port", "--port=9000", "--host", "--admin-port", "--admin_port=1", "--api-key",
    "--middleware", "--root-path", "--root_path", "--root-pa", "--root_pa=/x", "--root-path.x",
    "--uds", "--served-model-name", "--served_model_name=x", "--model", "--model=x", "--mod",
    "--enable-lora", "--no-enable-lora", "--max-loras", "--max-lora-rank", "--max_lora_rank=8",
    "--orca-formats", "--orca_grpc_port=9", "--orca-oob-min-interval", "--orca-anything",
    "--log-format", "--log-format=json", "--shutdown-timeout", "--config", "--revision",
    "--max-model-len", "--dtype", "--tensor-parallel-size", "-tp", "-tp=2", "-t",
    "--gpu-memory-utilization", "--device-memory-utilization", "--max-num-seqs",
    "--enforce-eager", "--no-enforce-eager", "--p", "--po", "--por",
    "--port=8000\n--host=0.0.0.0",
]  # fmt: skip
OTHER_ARGS = [
    "--kv-cache-memory-bytes", "16777216", "--max-num-batched-tokens", "--enable-prefix-caching",
    "--no-enable-prefix-caching", "--max-lora-cls-labels", "--model-impl", "--model-impl=vllm",
    "--enable-log-requests", "--compilation-config.level", "-O3", "-q", "awq", "-1", "-",
    "--chat-template", "{% for m in messages %}{{ m.content }}\n{% endfor %}", "--portal",
    "--api-server-count", "--quantization=fp8",
]  # fmt: skip


@pytest.mark.parametrize("arg", MANAGED_SPELLINGS)
def test_extra_args_setting_a_managed_flag_are_refused(arg: str):
    spec = {"model": MODEL, "engine": {"extraArgs": ["--kv-cache-memory-bytes", "1", arg, "x"]}}
    refused(vllmd("m", spec), EXTRA_ARGS_MESSAGE)


def test_other_extra_args_are_admitted():
    accepted(vllmd("m", {"model": MODEL, "engine": {"extraArgs": OTHER_ARGS}}))


def test_extra_args_are_bounded_for_the_rules_cost():
    """An API server refuses a CRD whose rules it estimates too costly: 10,000,000 per rule,
    100,000,000 for the CRD's rules together (apiextensions' StaticEstimatedCostLimit and
    StaticEstimatedCRDCostLimit). Its estimate of `s.matches(re)` is (bytes of s * 0.1) *
    (length of re * 0.25), a string of maxLength n counting 4n bytes; a rule on the items
    counts maxItems times. Without maxLength and maxItems the estimate is unbounded."""
    extra = openapi_schema("VLLMDeployment")["properties"]["spec"]["properties"]["engine"][
        "properties"
    ]["extraArgs"]
    assert extra["maxItems"] == 64 and extra["items"]["maxLength"] == 4096
    per_item = (4 * extra["items"]["maxLength"] * 0.1) * (len(spec_module.EXTRA_ARG_PATTERN) * 0.25)
    assert per_item < 10_000_000
    assert per_item * extra["maxItems"] < 50_000_000  # half the CRD's budget, at most
    too_many = {"model": MODEL, "engine": {"extraArgs": ["x"] * 65}}
    assert any("too long" in e for e in admit("VLLMDeployment", vllmd("m", too_many)))
    too_long = {"model": MODEL, "engine": {"extraArgs": ["x" * 4097]}}
    assert any("too long" in e for e in admit("VLLMDeployment", vllmd("m", too_long)))


def test_the_crd_rule_is_the_operators_pattern():
    items = openapi_schema("VLLMDeployment")["properties"]["spec"]["properties"]["engine"][
        "properties"
    ]["extraArgs"]["items"]
    (rule,) = items["x-kubernetes-validations"]
    assert rule["rule"] == f"!self.matches('{spec_module.EXTRA_ARG_PATTERN}')"


def _a_spec_with_every_flag() -> Any:
    body = copy.deepcopy(GOOD["gpu-everything"])
    body["spec"]["engine"] = {
        "maxModelLen": 4096,
        "dtype": "bfloat16",
        "tensorParallelSize": 2,
        "gpuMemoryUtilization": 0.9,
        "maxNumSeqs": 64,
        "enforceEager": True,
    }
    body["spec"]["orca"] = {"formats": ["TEXT"], "grpcPort": 9001, "minReportInterval": "0.5"}
    body["spec"]["lora"]["allowedSourceRoots"] = ["/adapters"]
    return parse_deployment(body, IMAGES)


def test_every_flag_the_operator_sets_is_managed():
    """A flag added to server_args must join MANAGED_FLAGS (and so the CRD's rule)."""
    args = builders.server_args(_a_spec_with_every_flag(), admin_public_key="a-public-key")
    flags = [a for a in args if a.startswith("-")]
    assert "--admin-token-public-key" in flags
    assert len(flags) > 15
    for flag in flags:
        assert re.match(spec_module.EXTRA_ARG_PATTERN, flag), (
            f"{flag} is set by the operator but not managed"
        )


def test_every_flag_of_vllm_ext_serve_is_managed():
    for flag in server_cli._extension_parser()._option_string_actions:
        assert re.match(spec_module.EXTRA_ARG_PATTERN, flag), (
            f"vllm-ext-serve's {flag} is not managed"
        )


def test_the_managed_flags_are_refused_in_the_crd_too():
    for flag in spec_module.MANAGED_FLAGS:
        arg = flag.replace("*", "x")
        spec = {"model": MODEL, "engine": {"extraArgs": [arg]}}
        assert any(EXTRA_ARGS_MESSAGE in e for e in admit("VLLMDeployment", vllmd("m", spec))), arg


# --- labels ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("podLabels", {"team": "ml team"}),
        ("podLabels", {"team": "x" * 64}),
        ("nodeSelector", {"gpu": "a100-"}),
        ("monitoring", {"labels": {"release": "prom/etheus"}}),
    ],
)
def test_label_values_the_children_cannot_carry_are_refused(field: str, value: Any):
    errors = admit("VLLMDeployment", vllmd("m", {"model": MODEL, field: value}))
    assert any("does not match" in e or "too long" in e for e in errors), errors
    with pytest.raises(InvalidSpec):
        parse_deployment(vllmd("m", {"model": MODEL, field: value}), IMAGES)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("podLabels", {"a b": "x"}),
        ("podLabels", {"-team": "x"}),
        ("podLabels", {"Example.org/team": "x"}),
        ("podLabels", {"example.org/": "x"}),
        ("podLabels", {"x" * 64: "x"}),
        ("nodeSelector", {"": "x"}),
        ("monitoring", {"labels": {"release/": "x"}}),
        ("podAnnotations", {"note with spaces": "anything goes in a value"}),
    ],
)
def test_label_and_annotation_keys_the_crd_cannot_check_are_invalid_specs(field: str, value: Any):
    with pytest.raises(InvalidSpec, match="not a label key"):
        parse_deployment(vllmd("m", {"model": MODEL, field: value}), IMAGES)


def test_the_crd_label_values_and_replicas_are_the_operators():
    spec = openapi_schema("VLLMDeployment")["properties"]["spec"]["properties"]
    values = [
        spec["podLabels"]["additionalProperties"],
        spec["nodeSelector"]["additionalProperties"],
        spec["monitoring"]["properties"]["labels"]["additionalProperties"],
    ]
    for value in values:
        assert (value["pattern"], value["maxLength"]) == (spec_module.LABEL_VALUE_PATTERN, 63)
    assert spec["replicas"]["maximum"] == spec_module.MAX_REPLICAS
    pool_name = spec["inferencePool"]["properties"]["name"]
    assert pool_name["maxLength"] == spec_module.MAX_POOL_NAME
    assert pool_name["pattern"] == f"^{spec_module._DNS_SUBDOMAIN.pattern}$"


# --- the InferencePool ----------------------------------------------------------------------------

EPP = {"name": "epp", "port": {"number": 9002}}


@pytest.mark.parametrize(
    "pool",
    [
        {"name": "Pool"},  # an object name: lowercase
        {"name": "pool_1"},
        {"name": "p" * 254},
        {"endpointPickerRef": {"name": "epp"}},  # a Service (the default kind) needs its port
        {"endpointPickerRef": {"name": "epp", "kind": "Service"}},
        {"endpointPickerRef": {**EPP, "failureMode": "Open"}},
        {"endpointPickerRef": {**EPP, "port": {"number": 0}}},
        {"endpointPickerRef": {"port": {"number": 9002}}},  # no name
    ],
)
def test_inference_pools_that_cannot_work_are_refused(pool: dict):
    assert admit("VLLMDeployment", vllmd("m", {"model": MODEL, "inferencePool": pool}))
    if "name" in pool or "port" not in pool["endpointPickerRef"]:  # what the operator rechecks
        with pytest.raises(InvalidSpec):
            parse_deployment(vllmd("m", {"model": MODEL, "inferencePool": pool}), IMAGES)


@pytest.mark.parametrize(
    "pool",
    [
        {},
        {"name": "pool-1.models"},
        {"endpointPickerRef": EPP},
        {"endpointPickerRef": {"group": "example.org", "kind": "Picker", "name": "p"}},
        {"endpointPickerRef": {**EPP, "group": "", "kind": "Service", "failureMode": "FailOpen"}},
    ],
)
def test_inference_pools_gie_takes_are_accepted(pool: dict):
    accepted(vllmd("m", {"model": MODEL, "inferencePool": pool}))


def test_good_labels_and_annotations_are_accepted():
    accepted(
        vllmd(
            "m",
            {
                "model": MODEL,
                "podLabels": {"team": "ml", "example.org/tier": "a.b_c-d", "empty": ""},
                "nodeSelector": {"kubernetes.io/arch": "amd64"},
                "podAnnotations": {"example.org/note": "free text, spaces and all"},
                "monitoring": {"labels": {"release": "prometheus"}},
            },
        )
    )


# --- GPUs from the resources ----------------------------------------------------------------------


# Quantities the CRD's pattern takes that are no GPU count. (Digits of other scripts, "²", the
# Arabic-Indic and fullwidth 1, are no quantities: tests/chart/test_crd_schema_strictness.py.)
@pytest.mark.parametrize("value", ["1.5", "-1", "1e3", "500m"])
def test_gpu_quantities_that_are_not_whole_numbers_are_invalid_specs(value: str):
    body = vllmd("m", {"model": MODEL, "resources": {"limits": {"nvidia.com/gpu": value}}})
    assert admit("VLLMDeployment", body) == []  # a quantity, not a count
    with pytest.raises(InvalidSpec, match="must be a whole number"):
        parse_deployment(body, IMAGES)


def test_gpu_counts_from_the_resources_are_bounded_and_not_zero_on_gpu():
    body = vllmd("m", {"model": MODEL, "resources": {"limits": {"nvidia.com/gpu": 17}}})
    with pytest.raises(InvalidSpec, match="above the maximum"):
        parse_deployment(body, IMAGES)
    body = vllmd("m", {"model": MODEL, "resources": {"limits": {"nvidia.com/gpu": "0"}}})
    with pytest.raises(InvalidSpec, match="needs at least 1 GPU"):
        parse_deployment(body, IMAGES)
    body = vllmd("m", {"model": MODEL, "resources": {"limits": {"nvidia.com/gpu": "2"}}})
    assert parse_deployment(body, IMAGES).gpus == 2
    # A count of thousands of digits (the quantity pattern has no length limit) is refused
    # as one, not a ValueError from int() that would crash the reconcile.
    for huge in ("9" * 5000, "0" * 5000 + "17"):
        body = vllmd("m", {"model": MODEL, "resources": {"limits": {"nvidia.com/gpu": huge}}})
        assert admit("VLLMDeployment", body) == []
        with pytest.raises(InvalidSpec, match="above the maximum"):
            parse_deployment(body, IMAGES)
    body = vllmd("m", {"model": MODEL, "resources": {"limits": {"nvidia.com/gpu": "0002"}}})
    assert parse_deployment(body, IMAGES).gpus == 2


# --- the pods' security, volumes and placement ----------------------------------------------------

SPEC_FIELDS = openapi_schema("VLLMDeployment")["properties"]["spec"]["properties"]
DATA_VOLUME = {"name": "data", "emptyDir": {}}


def _rules(schema: dict[str, Any]) -> list[str]:
    return [r["rule"] for r in schema.get("x-kubernetes-validations") or ()]


def test_the_crd_reserves_the_operators_volumes_and_mount_paths():
    """The CRD's lists are the operator's (spec.OWN_VOLUMES, OWN_MOUNT_PATHS, /models for pvc://
    models), and its path patterns too."""
    quoted = lambda names: ", ".join(f"'{n}'" for n in names)  # noqa: E731
    (volume_rule,) = _rules(SPEC_FIELDS["volumes"]["items"])
    assert volume_rule == f"!(self.name in [{quoted(spec_module.OWN_VOLUMES)}])"
    mount = SPEC_FIELDS["volumeMounts"]["items"]
    (mount_rule,) = _rules(mount)
    assert mount_rule == f"!(self.mountPath in [{quoted(spec_module.OWN_MOUNT_PATHS)}])"
    assert mount["properties"]["mountPath"]["pattern"] == spec_module.MOUNT_PATH_PATTERN
    assert mount["properties"]["subPath"]["pattern"] == spec_module.RELATIVE_PATH_PATTERN
    spec_rules = _rules(openapi_schema("VLLMDeployment")["properties"]["spec"])
    assert any(f"m.mountPath != '{spec_module.MODEL_MOUNT_PATH}'" in r for r in spec_rules)
    for field in ("podSecurityContext", "securityContext"):
        for profile in ("seccompProfile", "appArmorProfile"):
            local = SPEC_FIELDS[field]["properties"][profile]["properties"]["localhostProfile"]
            assert local["pattern"] == spec_module.RELATIVE_PATH_PATTERN


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"volumes": [{"name": "cache", "emptyDir": {}}]},
         "dshm, cache, model, tmp and home are the names of the operator's volumes"),
        ({"volumes": [DATA_VOLUME], "volumeMounts": [{"name": "data", "mountPath": "/tmp"}]},
         "are the operator's mounts (or above them)"),
        ({"volumes": [DATA_VOLUME], "volumeMounts": [{"name": "data", "mountPath": "/dev"}]},
         "are the operator's mounts (or above them)"),
        ({"volumes": [DATA_VOLUME], "volumeMounts": [{"name": "data", "mountPath": "/x/../tmp"}]},
         "mountPath must not have '.' or '..' components"),
        ({"volumes": [DATA_VOLUME],
          "volumeMounts": [{"name": "data", "mountPath": "/d", "subPath": "../etc"}]},
         "subPath must not have '.' or '..' components"),
        ({"volumes": [DATA_VOLUME], "volumeMounts": [{"name": "other", "mountPath": "/d"}]},
         "every volumeMounts[].name must name a volume of spec.volumes"),
        ({"volumeMounts": [{"name": "data", "mountPath": "/d"}]},
         "every volumeMounts[].name must name a volume of spec.volumes"),
        ({"model": {"uri": "pvc://weights/llama"}, "volumes": [DATA_VOLUME],
          "volumeMounts": [{"name": "data", "mountPath": "/models"}]},
         "/models holds the model's claim of a pvc:// model"),
        ({"securityContext": {"privileged": True}},
         "securityContext.privileged needs allowPrivilegeEscalation: true"),
        ({"podSecurityContext": {"seccompProfile": {"type": "Localhost"}}},
         "seccompProfile.localhostProfile goes with type Localhost, and only with it"),
        ({"securityContext": {"appArmorProfile": {"type": "Unconfined", "localhostProfile": "p"}}},
         "appArmorProfile.localhostProfile goes with type Localhost, and only with it"),
        ({"securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "../p"}}},
         "localhostProfile must not have '.' or '..' components"),
        ({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "minDomains": 2,
                                         "whenUnsatisfiable": "ScheduleAnyway"}]},
         "minDomains goes with whenUnsatisfiable DoNotSchedule"),
    ],
)  # fmt: skip
def test_pod_settings_that_cannot_work_are_refused(spec: dict[str, Any], message: str):
    refused(vllmd("m", {"model": MODEL, **spec}), message)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"shmSize": "0Gi"}, "does not match"),
        ({"shmSize": "2G"}, "does not match"),  # Mi or Gi
        ({"schedulerName": "My Scheduler"}, "does not match"),
        ({"securityContext": {"capabilities": {"add": ["CAP_SYS_ADMIN"]}}}, "is not one of"),
        ({"podSecurityContext": {"runAsUser": -1}}, "less than the minimum"),
        ({"volumes": [{"name": "Data"}]}, "does not match"),
    ],
)
def test_pod_settings_out_of_the_schema_are_refused(spec: dict[str, Any], message: str):
    errors = admit("VLLMDeployment", vllmd("m", {"model": MODEL, **spec}))
    assert any(message in e for e in errors), errors


def test_pod_settings_that_work_are_admitted():
    accepted(
        vllmd(
            "m",
            {
                "model": {"uri": "/models/llama"},
                "shmSize": "16Gi",
                "schedulerName": "gpu-scheduler",
                "podSecurityContext": {"runAsUser": 1000, "fsGroupChangePolicy": "Always",
                                       "seccompProfile": {"type": "Localhost",
                                                          "localhostProfile": "vllm.json"}},
                "securityContext": {"privileged": True, "allowPrivilegeEscalation": True,
                                    "capabilities": {"add": ["IPC_LOCK"], "drop": ["ALL"]}},
                "volumes": [DATA_VOLUME, {"name": "weights", "nfs": {"server": "s", "path": "/w"}}],
                "volumeMounts": [{"name": "weights", "mountPath": "/models", "readOnly": True},
                                 {"name": "data", "mountPath": "/home/vllm/.cache/x",
                                  "subPath": "a/b", "mountPropagation": "HostToContainer"}],
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                               "whenUnsatisfiable": "DoNotSchedule",
                                               "minDomains": 2}],
            },
        )
    )  # fmt: skip
