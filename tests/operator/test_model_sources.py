"""Model sources (spec.model.uri, spec.model.s3): what the pods get for each, valid against the
Kubernetes schema and Pod Security's "restricted" profile, and what the operator refuses of a
spec the CRD's rules would refuse too (objects stored before a rule, API servers without CEL;
the URIs themselves: tests/chart/test_crds.py)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from vllm_operator.model.builders import (
    MODEL_MOUNT,
    build_all,
    build_deployment,
    build_leader_worker_set,
    build_network_policy,
    server_args,
)
from vllm_operator.model.spec import InvalidSpec, S3Store, parse_deployment
from vllm_testkit.pod_security import RESTRICTED, Violation, violations
from vllm_testkit.samples import IMAGES, vllmd

KUBERNETES_VERSION = "1.34"  # as test_builders.py: the image volume source is in its schema
STORE = {
    "endpoint": "http://minio.storage:9000",
    "region": "eu-west-1",
    "credentialsSecret": {"name": "minio-creds"},
}
SOURCES = {
    "hf": {"uri": "hf://org/llama", "revision": "main"},
    "s3": {"uri": "s3://models.example/llama/3.1-8b", "s3": STORE},
    "s3 anonymous": {"uri": "s3://public-models"},
    "oci": {"uri": "oci://registry.example:5000/models/llama:v1"},
    "oci digest": {"uri": "oci://ghcr.io/org/llama@sha256:" + "ab" * 32},
    "pvc": {"uri": "pvc://weights/llama"},
    "path": {"uri": "/models/llama"},
}


def spec_of(model: dict[str, Any], **fields: Any):
    return parse_deployment(vllmd("m", {"model": model, **fields}), IMAGES)


def objects_of(model: dict[str, Any]) -> list[dict[str, Any]]:
    return build_all(spec_of(model), monitoring_available=False, operator_namespace="vllm-system")


def pod_spec(model: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return build_deployment(spec_of(model, **fields))["spec"]["template"]["spec"]


def env_of(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (container,) = pod_spec(model)["containers"]
    return {e["name"]: e for e in container["env"]}


# The testkit's profile follows the Pod Security Standards page, which does not list image
# volumes; the admission plugin admits them in "restricted" since Kubernetes 1.33
# (kubernetes/kubernetes#130394). The model's image volume is the one violation allowed.
MODEL_IMAGE_VOLUME = "Volume Types"


def restricted_violations(deployment: dict[str, Any]) -> list[Violation]:
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    allowed = {f"spec.volumes[{i}]: image" for i, v in enumerate(volumes) if v["name"] == "model"}
    return [
        v
        for v in violations(deployment)
        if not (v.control == MODEL_IMAGE_VOLUME and v.field in allowed)
    ]


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_source_builds_valid_pods_within_the_restricted_profile(source: str):
    for obj in objects_of(SOURCES[source]):
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        if obj["kind"] == "Deployment":
            assert restricted_violations(obj) == []


def test_only_the_image_volume_is_beyond_the_profile_page():
    """What `restricted_violations` leaves out, and nothing else."""
    (deployment,) = [o for o in objects_of(SOURCES["oci"]) if o["kind"] == "Deployment"]
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    index = next(i for i, v in enumerate(volumes) if v["name"] == "model")
    assert violations(deployment) == [
        Violation(RESTRICTED, "Volume Types", f"spec.volumes[{index}]: image")
    ]


def test_an_hf_model_is_passed_as_its_uri_and_downloaded_online():
    args = server_args(spec_of(SOURCES["hf"]))
    assert args[:3] == ["hf://org/llama", "--served-model-name", "org/llama"]
    assert args[args.index("--revision") + 1] == "main"
    env = env_of(SOURCES["hf"])
    assert "HF_HUB_OFFLINE" not in env
    assert not [name for name in env if name.startswith("AWS_")]


def test_an_s3_model_gets_its_store_and_credentials_from_the_secret():
    spec = spec_of(SOURCES["s3"])
    assert spec.model.s3 == S3Store("http://minio.storage:9000", "eu-west-1", "minio-creds")
    assert spec.model.served_name == "m"  # the resource's name, as for any non-hf source
    assert server_args(spec)[0] == "s3://models.example/llama/3.1-8b"
    env = env_of(SOURCES["s3"])
    assert env["HF_HUB_OFFLINE"]["value"] == "1"  # no Hub call from vLLM
    assert env["AWS_ENDPOINT_URL_S3"] == {
        "name": "AWS_ENDPOINT_URL_S3",
        "value": "http://minio.storage:9000",
    }
    assert env["AWS_REGION"]["value"] == "eu-west-1"
    secret = {
        name: env[name]["valueFrom"]["secretKeyRef"] for name in env if "valueFrom" in env[name]
    }
    assert secret == {
        "AWS_ACCESS_KEY_ID": {"name": "minio-creds", "key": "AWS_ACCESS_KEY_ID"},
        "AWS_SECRET_ACCESS_KEY": {"name": "minio-creds", "key": "AWS_SECRET_ACCESS_KEY"},
        # Long-lived keys have no session token: the pod starts without it.
        "AWS_SESSION_TOKEN": {"name": "minio-creds", "key": "AWS_SESSION_TOKEN", "optional": True},
    }


def test_an_s3_model_without_a_store_block_is_anonymous_on_aws():
    env = env_of(SOURCES["s3 anonymous"])
    assert not [name for name in env if name.startswith("AWS_")]
    assert env["HF_HUB_OFFLINE"]["value"] == "1"
    partial = env_of({"uri": "s3://bucket/p", "s3": {"region": "us-east-1"}})
    assert [name for name in partial if name.startswith("AWS_")] == ["AWS_REGION"]


def test_the_users_env_comes_after_the_operators_and_wins():
    own = [{"name": "AWS_REGION", "value": "us-west-2"}]
    (container,) = pod_spec(SOURCES["s3"], env=own)["containers"]
    regions = [e["value"] for e in container["env"] if e["name"] == "AWS_REGION"]
    assert regions == ["eu-west-1", "us-west-2"]  # Kubernetes takes the last


@pytest.mark.parametrize("source", ["oci", "oci digest"])
def test_an_oci_model_is_an_image_volume_mounted_read_only(source: str):
    model = SOURCES[source]
    pod = pod_spec(model)
    (volume,) = [v for v in pod["volumes"] if v["name"] == "model"]
    # The reference as given; the pull policy is Kubernetes' default (Always for :latest).
    assert volume == {"name": "model", "image": {"reference": model["uri"][len("oci://") :]}}
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "model"]
    assert mount == {"name": "model", "mountPath": MODEL_MOUNT, "readOnly": True}
    assert container["args"][0] == MODEL_MOUNT
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in container["env"]


def test_a_multi_node_oci_model_mounts_the_image_on_leaders_and_workers():
    spec = spec_of(SOURCES["oci"], parallelism={"nodes": 2, "tensor": 2})
    templates = build_leader_worker_set(spec)["spec"]["leaderWorkerTemplate"]
    for role in ("leaderTemplate", "workerTemplate"):
        volumes = templates[role]["spec"]["volumes"]
        assert [v["image"] for v in volumes if v["name"] == "model"] == [
            {"reference": "registry.example:5000/models/llama:v1"}
        ]


def test_the_network_policy_leaves_egress_open_for_downloads():
    """Ingress only: the servers reach the Hub, S3 stores and registries (the kubelet pulls
    images, not the pod) without an egress rule of the operator's."""
    policy = build_network_policy(spec_of(SOURCES["s3"], networkPolicy={"enabled": True}), "x")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert "egress" not in policy["spec"]


def test_volume_mounts_stay_off_models_for_mounted_models_only():
    data = {"volumes": [{"name": "data", "emptyDir": {}}]}
    at_models = {**data, "volumeMounts": [{"name": "data", "mountPath": "/models"}]}
    for source in ("oci", "pvc"):
        with pytest.raises(InvalidSpec, match="mountPath /models is the operator's"):
            spec_of(SOURCES[source], **at_models)
    for source in ("hf", "s3", "path"):
        spec_of(SOURCES[source], **at_models)
