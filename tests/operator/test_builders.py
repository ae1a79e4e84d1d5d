"""Builders: golden manifests, valid against the official Kubernetes schemas, and the properties
a working vLLM pod needs. Regenerate the golden files with UPDATE_GOLDEN=1."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from vllm_operator.model.builders import (
    ADAPTERS_LOADED,
    build_all,
    build_deployment,
    build_inference_pool,
    selector_labels,
    server_args,
)
from vllm_operator.model.spec import parse_deployment
from vllm_testkit.samples import GOOD, IMAGES, vllmd
from vllm_testkit.tiny_model import CPU_ARGS, CPU_ENGINE

GOLDEN = Path(__file__).parents[1] / "golden"
KUBERNETES_VERSION = "1.34"  # a current release (sleep preStop hooks need >= 1.30)


def build(name: str) -> list[dict]:
    spec = parse_deployment(GOOD[name], IMAGES)
    return build_all(
        spec,
        monitoring_available=True,
        operator_namespace="vllm-system",
        inference_pool_available=True,
    )


@pytest.mark.parametrize("name", sorted(GOOD))
def test_golden_manifests(name: str):
    objects = build(name)
    path = GOLDEN / f"{name}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1" and objects != golden(path):
        path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
        pytest.fail(f"rewrote {path.name}: review the diff, then run again without UPDATE_GOLDEN")
    assert objects == golden(path)


def golden(path: Path) -> list[dict]:
    return list(yaml.safe_load_all(path.read_text())) if path.exists() else []


@pytest.mark.parametrize("name", sorted(GOOD))
def test_manifests_are_valid_kubernetes(name: str):
    for obj in build(name):
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # Prometheus Operator CRDs: not in the Kubernetes schemas
        if obj["kind"] == "InferencePool":
            check_inference_pool(obj)  # the Gateway API Inference Extension's CRD
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


# The spec schema of GIE's InferencePool v1 CRD (where it came from: its "$comment").
GIE_SCHEMA = json.loads((Path(__file__).parent / "gie-inferencepool-v1.schema.json").read_text())


def check_inference_pool(obj: dict) -> None:
    """`obj` is an InferencePool GIE v1's CRD admits: its schema, and its two CEL rules."""
    jsonschema.validate(obj, GIE_SCHEMA)
    numbers = [p["number"] for p in obj["spec"]["targetPorts"]]
    assert len(set(numbers)) == len(numbers), "port number must be unique"
    ref = obj["spec"].get("endpointPickerRef")
    if ref is not None:
        assert ref.get("kind", "Service") != "Service" or "port" in ref, "port is required"


def pool_spec(name: str = "m", **fields) -> dict:
    body = vllmd(name, {"model": {"uri": "/m"}, "port": 8080, **fields}, "models")
    return parse_deployment(body, IMAGES)


EPP = {"name": "epp", "port": {"number": 9002}}


@pytest.mark.parametrize(
    "pool",
    [
        {},
        {"name": "pool.a-1"},
        {"endpointPickerRef": EPP},
        {"endpointPickerRef": {**EPP, "group": "", "kind": "Service", "failureMode": "FailOpen"}},
        {"endpointPickerRef": {"group": "example.org", "kind": "Picker", "name": "p"}},
    ],
)
def test_inference_pool_is_what_gie_v1_admits(pool: dict):
    spec = pool_spec(inferencePool=pool)
    obj = build_inference_pool(spec)
    check_inference_pool(obj)
    assert obj["metadata"]["name"] == pool.get("name", "m")
    assert obj["spec"].get("endpointPickerRef") == pool.get("endpointPickerRef")


def test_inference_pool_selects_the_deployments_pods_on_the_api_port_owned_by_the_cr():
    spec = pool_spec(inferencePool={"endpointPickerRef": EPP})
    objects = build_all(spec, monitoring_available=False, operator_namespace="x",
                        inference_pool_available=True)  # fmt: skip
    deployment, pool = objects[0], objects[-1]
    assert pool["spec"] == {
        "selector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]},
        "targetPorts": [{"number": 8080}],
        "endpointPickerRef": EPP,
    }
    assert pool["metadata"]["ownerReferences"] == deployment["metadata"]["ownerReferences"]
    assert pool["metadata"]["labels"] == deployment["metadata"]["labels"]
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
    # No label of Kubernetes' own prefixes on the pods: the pool selects by its selector.
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert not [k for k in labels if "k8s.io/" in k and k != "app.kubernetes.io/name"]


def test_inference_pool_only_when_asked_and_its_crd_is_served():
    def kinds(spec, available: bool) -> list[str]:
        objects = build_all(spec, monitoring_available=False, operator_namespace="x",
                            inference_pool_available=available)  # fmt: skip
        return [o["kind"] for o in objects]

    assert "InferencePool" in kinds(pool_spec(inferencePool={}), True)
    assert "InferencePool" not in kinds(pool_spec(inferencePool={}), False)
    assert "InferencePool" not in kinds(pool_spec(), True)


def pod(name: str) -> dict:
    return build_deployment(parse_deployment(GOOD[name], IMAGES))["spec"]["template"]


def test_probes_liveness_health_readiness_ready_no_startup_probe():
    container = pod("gpu-hf-minimal")["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert "startupProbe" not in container


def test_pod_basics():
    template = pod("gpu-hf-minimal")
    spec = template["spec"]
    assert spec["enableServiceLinks"] is False
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}} in spec["volumes"]
    assert spec["containers"][0]["command"] == ["vllm-ext-serve"]
    assert spec["containers"][0]["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
    assert spec["terminationGracePeriodSeconds"] == 120
    assert selector_labels("llama").items() <= template["metadata"]["labels"].items()
    assert "readinessGates" not in spec


def test_gpu_requests_are_strings_and_cpu_mode_has_none():
    gpu = pod("gpu-everything")["spec"]["containers"][0]["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == gpu["requests"]["nvidia.com/gpu"] == "2"
    cpu = pod("cpu-tiny")["spec"]["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in cpu.get("limits", {}) | cpu.get("requests", {})
    assert cpu["requests"]["cpu"] == "2"  # a number in the CR, a string here


def test_cpu_mode_uses_the_cpu_image_and_gpu_the_gpu_image():
    assert pod("cpu-tiny")["spec"]["containers"][0]["image"] == IMAGES.cpu
    assert pod("gpu-hf-minimal")["spec"]["containers"][0]["image"] == IMAGES.gpu


def test_lora_pods_carry_the_readiness_gate():
    assert pod("gpu-everything")["spec"]["readinessGates"] == [{"conditionType": ADAPTERS_LOADED}]


def test_secrets_become_env_from_secret_refs():
    env = {e["name"]: e for e in pod("gpu-everything")["spec"]["containers"][0]["env"]}
    assert env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "qwen-api",
        "key": "api-key",
    }
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf", "key": "hf-token"}
    assert env["VLLM_LOGGING_LEVEL"]["value"] == "DEBUG"


@pytest.mark.parametrize(
    ("uri", "model_arg"),
    [
        ("hf://org/name", "hf://org/name"),  # the server downloads it before it imports vLLM
        ("s3://bucket/models/llama", "s3://bucket/models/llama"),
        ("oci://ghcr.io/org/llama:v1", "/models"),  # the image volume's mount
        ("pvc://models/qwen/Qwen2.5-7B", "/models/qwen/Qwen2.5-7B"),
        ("pvc://models", "/models"),
        ("/weights/llama", "/weights/llama"),
    ],
)
def test_model_location(uri: str, model_arg: str):
    spec = parse_deployment(vllmd("m", {"model": {"uri": uri}}), IMAGES)
    assert server_args(spec)[0] == model_arg


def test_server_args_follow_the_spec():
    args = server_args(parse_deployment(GOOD["gpu-everything"], IMAGES))
    joined = " ".join(args)
    assert "--served-model-name qwen" in joined
    assert "--revision v1" in joined
    assert "--tensor-parallel-size 2" in joined
    assert "--enable-lora --max-loras 8 --max-lora-rank 64" in joined
    assert "--shutdown-timeout 290" in joined  # grace 300 minus preStop and slack
    cpu = " ".join(server_args(parse_deployment(GOOD["cpu-tiny"], IMAGES)))
    assert "--orca-formats TEXT JSON --orca-grpc-port 9001 --orca-oob-min-interval 0.5" in cpu
    assert cpu.endswith("--kv-cache-memory-bytes 16777216")


def test_the_cpu_engine_spec_serves_with_the_tiny_models_cpu_flags():
    """The e2e suite's VLLMDeployment and the local tests run the tiny model alike."""
    plain = parse_deployment(vllmd("t", {"model": {"uri": "/m"}}), IMAGES)
    spec = parse_deployment(vllmd("t", {"model": {"uri": "/m"}, "engine": CPU_ENGINE}), IMAGES)
    assert flags(server_args(spec)) - flags(server_args(plain)) == flags(CPU_ARGS)


def flags(argv) -> set[tuple[str, str | None]]:
    """(flag, value) pairs of a command line: order does not matter to vLLM's parser."""
    words = [w for w in argv if w.startswith("--")]
    out = set()
    for word in words:
        i = argv.index(word)
        value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else None
        out.add((word, value))
    return out


def test_optional_objects_follow_the_spec():
    kinds = [o["kind"] for o in build("gpu-hf-minimal")]
    # One replica: no PodDisruptionBudget; the NetworkPolicy is on by default.
    assert kinds == ["Deployment", "Service", "NetworkPolicy"]
    kinds = [o["kind"] for o in build("gpu-everything")]
    assert kinds == [
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "PodMonitor",
        "NetworkPolicy",
        "InferencePool",
    ]
    spec = parse_deployment(GOOD["gpu-everything"], IMAGES)
    without_monitoring = build_all(spec, monitoring_available=False, operator_namespace="x")
    assert "ServiceMonitor" not in [o["kind"] for o in without_monitoring]


def test_every_object_is_owned_by_the_vllmdeployment():
    for obj in build("gpu-everything"):
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref == {
            "apiVersion": "serving.vllm.ai/v1alpha1",
            "kind": "VLLMDeployment",
            "name": "qwen",
            "uid": "uid-qwen",
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "vllm-operator"


def test_builders_are_deterministic():
    assert build("gpu-everything") == build("gpu-everything")


def test_network_policy_keeps_the_admin_port_to_the_operator():
    (policy,) = [o for o in build("gpu-everything") if o["kind"] == "NetworkPolicy"]
    by_port = {r["ports"][0]["port"]: r["from"] for r in policy["spec"]["ingress"]}
    operator = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "vllm-system"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "vllm-operator"}},
    }
    gateway = {"namespaceSelector": {"matchLabels": {"gateway": "true"}}}
    prometheus = {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}
    assert by_port == {
        8000: [operator, gateway, prometheus],  # the API and /metrics
        8001: [operator],  # LoRA load/unload: nothing else
        9001: [gateway],  # out-of-band ORCA
    }
    (deployment,) = [o for o in build("gpu-everything") if o["kind"] == "Deployment"]
    ports = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert {p["name"]: p["containerPort"] for p in ports} == {
        "http": 8000,
        "admin": 8001,
        "orca-grpc": 9001,
    }


def test_two_replicas_get_a_disruption_budget_one_does_not():
    def kinds(replicas: int) -> list[str]:
        spec = parse_deployment(vllmd("m", {"model": {"uri": "/m"}, "replicas": replicas}), IMAGES)
        return [
            o["kind"] for o in build_all(spec, monitoring_available=False, operator_namespace="x")
        ]

    assert "PodDisruptionBudget" in kinds(2)
    assert "PodDisruptionBudget" not in kinds(1)


def test_the_orca_grpc_port_follows_the_api_port():
    """Open like the API port when no peers are listed (a balancer's out-of-band reports);
    with peers, for those only; no rule without a gRPC port."""

    def rules(extra: dict) -> list[tuple[int, object]]:
        spec = parse_deployment(vllmd("m", {"model": {"uri": "/m"}, **extra}), IMAGES)
        (policy,) = [o for o in build_all(spec, monitoring_available=False, operator_namespace="x")
                     if o["kind"] == "NetworkPolicy"]  # fmt: skip
        return [(r["ports"][0]["port"], r.get("from")) for r in policy["spec"]["ingress"]]

    peer = {"podSelector": {}}
    assert [p for p, _ in rules({"networkPolicy": {"from": [peer]}})] == [8000, 8001]
    assert rules({"orca": {"grpcPort": 9001}})[2] == (9001, None)
    assert rules({"orca": {"grpcPort": 9001}, "networkPolicy": {"from": [peer]}})[2] == (
        9001, [peer]
    )  # fmt: skip


def test_a_claim_paths_last_character_is_kept_only_its_slash_goes():
    # Only a trailing slash is dropped (rstrip strips a set of characters, not a suffix).
    for uri in ("pvc://models/phi-3-ONNX", "pvc://models/phi-3-ONNX/"):
        spec = parse_deployment(vllmd("m", {"model": {"uri": uri}}), IMAGES)
        assert server_args(spec)[0] == "/models/phi-3-ONNX"


def test_the_network_policy_keeps_the_admin_port_to_the_operator_and_opens_the_api_port():
    spec = parse_deployment(
        vllmd("m", {"model": {"uri": "/m"}, "networkPolicy": {"enabled": True}}), IMAGES
    )
    (policy,) = [o for o in build_all(spec, monitoring_available=False,
                                      operator_namespace="ops") if o["kind"] == "NetworkPolicy"]  # fmt: skip
    api, admin = policy["spec"]["ingress"]
    assert api == {"ports": [{"protocol": "TCP", "port": 8000}]}  # no `from`: every client
    assert admin["ports"] == [{"protocol": "TCP", "port": 8001}]
    (operator,) = admin["from"]
    assert operator["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ops"}
    assert operator["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "vllm-operator"}


def test_the_servers_get_the_allowed_adapter_roots():
    lora = {"enabled": True, "allowedSourceRoots": ["/models", "/adapters"]}
    args = server_args(parse_deployment(vllmd("m", {"model": {"uri": "/m"}, "lora": lora}), IMAGES))
    i = args.index("--lora-allowed-roots")
    assert args[0] == "/m"  # added to the others
    assert args[i + 1 : i + 3] == ["/models", "/adapters"]
    assert args.count("--lora-allowed-roots") == 1
    open_lora = {"model": {"uri": "/m"}, "lora": {"enabled": True}}
    assert "--lora-allowed-roots" not in server_args(
        parse_deployment(vllmd("m", open_lora), IMAGES)
    )


# --- the pods' security, resources, volumes and placement -----------------------------------


def container_of(template: dict) -> dict:
    (container,) = template["spec"]["containers"]
    return container


def test_pods_run_as_the_images_non_root_user_with_nothing_to_escalate():
    template = pod("gpu-hf-minimal")
    assert template["spec"]["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container_of(template)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
    }
    assert template["spec"]["automountServiceAccountToken"] is False


def test_vllm_writes_to_volumes_not_to_the_read_only_image():
    """$HOME (vLLM's caches and config, triton's, ...), /tmp (IPC sockets, torch inductor),
    /dev/shm and the model cache are volumes; HOME points at its volume whatever the image's
    user says."""
    template = pod("gpu-hf-minimal")
    mounts = {m["mountPath"]: m["name"] for m in container_of(template)["volumeMounts"]}
    assert mounts == {"/dev/shm": "dshm", "/cache": "cache", "/tmp": "tmp", "/home/vllm": "home"}
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    assert volumes["tmp"] == {"name": "tmp", "emptyDir": {}}
    assert volumes["home"] == {"name": "home", "emptyDir": {}}
    env = {e["name"]: e.get("value") for e in container_of(template)["env"]}
    assert env["HOME"] == "/home/vllm"
    assert env["HF_HOME"] == "/cache/huggingface"


def test_security_context_overrides_replace_the_defaults_field_by_field():
    spec = parse_deployment(
        vllmd(
            "m",
            {
                "model": {"uri": "/m"},
                "podSecurityContext": {"runAsUser": 1001, "seccompProfile": {
                    "type": "Localhost", "localhostProfile": "profiles/vllm.json"}},
                "securityContext": {"readOnlyRootFilesystem": False,
                                    "capabilities": {"add": ["IPC_LOCK"]}},
            },
        ),
        IMAGES,
    )  # fmt: skip
    template = build_deployment(spec)["spec"]["template"]
    assert template["spec"]["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1001,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/vllm.json"},
    }
    # A field given replaces the default's whole value: capabilities without `drop`.
    assert container_of(template)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"add": ["IPC_LOCK"]},
        "readOnlyRootFilesystem": False,
    }


def test_the_builders_do_not_share_the_specs_objects():
    spec = parse_deployment(GOOD["gpu-everything"], IMAGES)
    first = build_deployment(spec)
    first["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = 0
    first["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"][
        "drop"
    ].append("X")
    assert build_deployment(spec) == build_deployment(
        parse_deployment(GOOD["gpu-everything"], IMAGES)
    )


@pytest.mark.parametrize(
    ("extra", "requests", "limits"),
    [
        ({}, {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"}, {"nvidia.com/gpu": "1"}),
        (
            {"gpusPerReplica": 4},
            {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "4"},
            {"nvidia.com/gpu": "4"},
        ),
        ({"accelerator": "CPU"}, {"cpu": "2", "memory": "4Gi"}, None),
        # Given requests stay; what is not given is derived.
        (
            {"accelerator": "CPU", "resources": {"requests": {"cpu": "500m"}}},
            {"cpu": "500m", "memory": "4Gi"},
            None,
        ),
        # A limit alone: Kubernetes takes it as the request too, none is derived (it could
        # exceed the limit).
        (
            {"accelerator": "CPU", "resources": {"limits": {"memory": "1Gi"}}},
            {"cpu": "2"},
            {"memory": "1Gi"},
        ),
    ],
)
def test_requests_are_derived_unless_given_so_no_pod_is_best_effort(extra, requests, limits):
    spec = parse_deployment(vllmd("m", {"model": {"uri": "/m"}, **extra}), IMAGES)
    resources = container_of(build_deployment(spec)["spec"]["template"])["resources"]
    assert resources.get("requests") == requests
    assert resources.get("limits") == limits


def test_shm_size_limits_the_memory_volume():
    spec = parse_deployment(vllmd("m", {"model": {"uri": "/m"}, "shmSize": "16Gi"}), IMAGES)
    volumes = build_deployment(spec)["spec"]["template"]["spec"]["volumes"]
    assert volumes[0] == {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}


def test_model_cache_is_read_write_once_unless_asked():
    def access(cache: dict) -> list[str]:
        spec = parse_deployment(vllmd("m", {"model": {"uri": "/m"}, "modelCache": cache}), IMAGES)
        (claim,) = [o for o in build_all(spec, monitoring_available=False, operator_namespace="x")
                    if o["kind"] == "PersistentVolumeClaim"]  # fmt: skip
        return claim["spec"]["accessModes"]

    assert access({"enabled": True}) == ["ReadWriteOnce"]
    assert access({"enabled": True, "accessMode": "ReadWriteMany"}) == ["ReadWriteMany"]


def test_extra_volumes_are_mounted_after_the_operators():
    nfs = {"name": "weights", "nfs": {"server": "nfs.example", "path": "/exports/w"}}
    config = {"name": "templates", "configMap": {"name": "chat-templates"}}
    mounts = [
        {"name": "weights", "mountPath": "/models", "readOnly": True},
        {"name": "templates", "mountPath": "/etc/templates", "subPath": "v1"},
    ]
    spec = parse_deployment(
        vllmd("m", {"model": {"uri": "/models/llama"}, "volumes": [nfs, config],
                    "volumeMounts": mounts}), IMAGES
    )  # fmt: skip
    template = build_deployment(spec)["spec"]["template"]
    assert template["spec"]["volumes"][-2:] == [nfs, config]
    assert container_of(template)["volumeMounts"][-2:] == mounts
    assert server_args(spec)[0] == "/models/llama"


def test_topology_spread_counts_the_deployments_pods_unless_told_and_scheduler_name():
    zone = {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway"}  # fmt: skip
    own = {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname",
           "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"team": "ml"}},
           "minDomains": 2}  # fmt: skip
    spec = parse_deployment(
        vllmd("m", {"model": {"uri": "/m"}, "topologySpreadConstraints": [zone, own],
                    "schedulerName": "gpu-scheduler"}), IMAGES
    )  # fmt: skip
    pod_spec = build_deployment(spec)["spec"]["template"]["spec"]
    assert pod_spec["topologySpreadConstraints"] == [
        zone | {"labelSelector": {"matchLabels": selector_labels("m")}},
        own,
    ]
    assert pod_spec["schedulerName"] == "gpu-scheduler"
    plain = build_deployment(parse_deployment(vllmd("m", {"model": {"uri": "/m"}}), IMAGES))
    assert "topologySpreadConstraints" not in plain["spec"]["template"]["spec"]
    assert "schedulerName" not in plain["spec"]["template"]["spec"]


def test_the_volumes_and_paths_spec_reserves_are_the_builders():
    """spec.OWN_VOLUMES and OWN_MOUNT_PATHS (and the CRD's rules, which repeat them) keep users'
    volumes off what the pods have: every volume and mount the builders make, and the paths
    above the mounts, are in them (/models with a pvc:// model)."""
    from vllm_operator.model.spec import MODEL_MOUNT_PATH, OWN_MOUNT_PATHS, OWN_VOLUMES

    spec = parse_deployment(
        vllmd("m", {"model": {"uri": "pvc://weights/m"}, "modelCache": {"enabled": True}}), IMAGES
    )
    template = build_deployment(spec)["spec"]["template"]
    assert {v["name"] for v in template["spec"]["volumes"]} == set(OWN_VOLUMES)
    paths = {m["mountPath"] for m in container_of(template)["volumeMounts"]}
    above = {p.rsplit("/", 1)[0] for p in paths} - {""}
    assert paths | above == {*OWN_MOUNT_PATHS, MODEL_MOUNT_PATH}
