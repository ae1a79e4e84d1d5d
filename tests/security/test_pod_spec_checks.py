"""The operator's checks of the pods' security, volumes and placement (`spec.py`), exactly: each
InvalidSpec with its message, the boundaries still accepted, and the defaults the overrides are
merged over. Pure and fast like test_operator_spec_checks.py (the mutation run uses both);
test_crd_admission_rules.py shows the same rules in the CRD."""

from __future__ import annotations

from typing import Any

import pytest

from vllm_operator.model.spec import (
    CONTAINER_SECURITY_CONTEXT,
    OWN_MOUNT_PATHS,
    OWN_VOLUMES,
    POD_SECURITY_CONTEXT,
    InvalidSpec,
    parse_deployment,
)
from vllm_testkit.samples import IMAGES, vllmd

MODEL = {"uri": "hf://org/model"}
DATA = {"name": "data", "emptyDir": {}}


def parse(spec: dict[str, Any]):
    return parse_deployment(vllmd("m", {"model": MODEL, **spec}), IMAGES)


def refusal(spec: dict[str, Any]) -> str:
    with pytest.raises(InvalidSpec) as info:
        parse(spec)
    return str(info.value)


def mounts(*items: dict[str, Any], volumes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"volumes": [DATA] if volumes is None else volumes, "volumeMounts": list(items)}


# --- security contexts ----------------------------------------------------------------------------


def test_without_overrides_the_defaults():
    spec = parse({})
    assert spec.pod_security_context == POD_SECURITY_CONTEXT
    assert spec.security_context == CONTAINER_SECURITY_CONTEXT
    assert POD_SECURITY_CONTEXT["runAsUser"] == 65532 and POD_SECURITY_CONTEXT["runAsNonRoot"]


def test_overrides_replace_whole_fields_and_keep_the_other_defaults():
    spec = parse(
        {
            "podSecurityContext": {"fsGroup": 3000, "supplementalGroups": [44]},
            "securityContext": {"capabilities": {"add": ["IPC_LOCK"]}},
        }
    )
    assert spec.pod_security_context == {**POD_SECURITY_CONTEXT, "fsGroup": 3000,
                                         "supplementalGroups": [44]}  # fmt: skip
    assert spec.security_context == {**CONTAINER_SECURITY_CONTEXT,
                                     "capabilities": {"add": ["IPC_LOCK"]}}  # fmt: skip


def test_the_defaults_are_not_shared_with_the_spec():
    spec = parse({})
    spec.pod_security_context["seccompProfile"]["type"] = "Unconfined"
    spec.security_context["capabilities"]["drop"].append("X")
    assert parse({}).pod_security_context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert parse({}).security_context["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize(
    "context",
    [{"privileged": True}, {"privileged": True, "allowPrivilegeEscalation": False}],
)
def test_privileged_needs_privilege_escalation(context: dict[str, Any]):
    assert refusal({"securityContext": context}) == (
        "securityContext.privileged needs allowPrivilegeEscalation: true (it defaults to false)"
    )


def test_privileged_with_privilege_escalation_or_not_privileged():
    both = {"privileged": True, "allowPrivilegeEscalation": True}
    assert parse({"securityContext": both}).security_context["privileged"] is True
    assert parse({"securityContext": {"privileged": False}}).security_context["privileged"] is False


ROOT_MESSAGE = "runAsUser 0 is root, which runAsNonRoot (true by default) refuses: set runAsNonRoot to false too"


@pytest.mark.parametrize(
    "spec",
    [
        {"podSecurityContext": {"runAsUser": 0}},
        {"securityContext": {"runAsUser": 0}},
        {"securityContext": {"runAsUser": 0, "runAsNonRoot": True},
         "podSecurityContext": {"runAsNonRoot": False}},
        {"podSecurityContext": {"runAsUser": 0}, "securityContext": {"runAsNonRoot": True}},
    ],
)  # fmt: skip
def test_root_with_run_as_non_root_is_refused(spec: dict[str, Any]):
    assert refusal(spec) == ROOT_MESSAGE


@pytest.mark.parametrize(
    "spec",
    [
        {"podSecurityContext": {"runAsUser": 0, "runAsNonRoot": False}},
        {"securityContext": {"runAsUser": 0, "runAsNonRoot": False}},
        {"podSecurityContext": {"runAsUser": 0}, "securityContext": {"runAsUser": 1000}},
        {"podSecurityContext": {"runAsUser": 1}},
    ],
)
def test_root_when_run_as_non_root_is_off_or_another_user(spec: dict[str, Any]):
    parse(spec)


@pytest.mark.parametrize("field", ["podSecurityContext", "securityContext"])
@pytest.mark.parametrize("profile", ["seccompProfile", "appArmorProfile"])
def test_localhost_profiles(field: str, profile: str):
    message = f"{field}.{profile}: localhostProfile goes with type Localhost, and only with it"
    assert refusal({field: {profile: {"type": "Localhost"}}}) == message
    assert refusal({field: {profile: {"type": "RuntimeDefault", "localhostProfile": "p"}}}) == (
        message
    )
    local = {"type": "Localhost", "localhostProfile": "profiles/vllm.json"}
    assert parse({field: {profile: local}})  # accepted
    for bad in ("../x", "a/./b", "/abs", "a//b", "a b"):
        assert refusal({field: {profile: {"type": "Localhost", "localhostProfile": bad}}}) == (
            f"{field}.{profile}.localhostProfile {bad!r} must be a relative path without '.' or '..'"
        )


# --- volumes and mounts ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", OWN_VOLUMES)
def test_the_operators_volume_names_are_refused(name: str):
    assert refusal({"volumes": [{"name": name, "emptyDir": {}}]}) == (
        f"volumes: {name!r} is the name of one of the operator's volumes "
        "(dshm, cache, model, tmp, home)"
    )


def test_two_volumes_of_one_name_are_refused():
    assert refusal({"volumes": [DATA, DATA]}) == "volumes: two volumes are named 'data'"


@pytest.mark.parametrize("path", OWN_MOUNT_PATHS)
def test_the_operators_mount_paths_and_those_above_them_are_refused(path: str):
    assert refusal(mounts({"name": "data", "mountPath": path})) == (
        f"volumeMounts: mountPath {path} is the operator's (or above one of its mounts: "
        "/dev, /dev/shm, /cache, /tmp, /home, /home/vllm)"
    )


def test_models_is_the_operators_for_pvc_models_only():
    mount = {"name": "data", "mountPath": "/models"}
    assert refusal({"model": {"uri": "pvc://weights/llama"}, **mounts(mount)}) == (
        "volumeMounts: mountPath /models is the operator's (or above one of its mounts: "
        "/dev, /dev/shm, /cache, /tmp, /home, /home/vllm, /models)"
    )
    assert parse({"model": {"uri": "/models/llama"}, **mounts(mount)}).volume_mounts == (mount,)


@pytest.mark.parametrize(
    "path", ["/data/../tmp", "/./tmp", "/data/.", "relative", "/data/", "//data", "/a b", "/"]
)
def test_mount_paths_are_absolute_without_dot_components(path: str):
    assert refusal(mounts({"name": "data", "mountPath": path})) == (
        f"volumeMounts: mountPath {path!r} must be an absolute path without '.' or '..'"
    )


@pytest.mark.parametrize("path", ["/data", "/home/vllm/.config/x", "/cache/extra", "/a/.b/..c"])
def test_mount_paths_below_the_operators_or_elsewhere(path: str):
    assert parse(mounts({"name": "data", "mountPath": path})).volume_mounts[0]["mountPath"] == path


def test_two_mounts_at_one_path_are_refused():
    twice = mounts({"name": "data", "mountPath": "/d"}, {"name": "data", "mountPath": "/d"})
    assert refusal(twice) == "volumeMounts: two mounts at /d"
    # One volume at two paths is fine.
    parse(mounts({"name": "data", "mountPath": "/d"}, {"name": "data", "mountPath": "/e"}))


@pytest.mark.parametrize("name", ["cache", "nope", "dshm"])
def test_mounts_name_a_volume_of_spec_volumes(name: str):
    assert refusal(mounts({"name": name, "mountPath": "/d"})) == (
        f"volumeMounts: {name!r} names no volume of spec.volumes"
    )
    assert refusal(mounts({"name": name, "mountPath": "/d"}, volumes=[])) == (
        f"volumeMounts: {name!r} names no volume of spec.volumes"
    )


@pytest.mark.parametrize("sub", ["..", "a/../../b", "./a", "/abs", "a/", ""])
def test_sub_paths_are_relative_without_dot_components(sub: str):
    assert refusal(mounts({"name": "data", "mountPath": "/d", "subPath": sub})) == (
        f"volumeMounts: subPath {sub!r} must be a relative path without '.' or '..'"
    )
    parse(mounts({"name": "data", "mountPath": "/d", "subPath": "a/b..c/.d"}))


# --- placement ------------------------------------------------------------------------------------

ZONE = {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule"}  # fmt: skip


def test_topology_keys_are_label_keys():
    bad = ZONE | {"topologyKey": "zone name"}
    assert refusal({"topologySpreadConstraints": [bad]}) == (
        "topologySpreadConstraints: topologyKey 'zone name' is not a label key: its name must "
        "be 1 to 63 letters, digits, '-', '_' or '.', alphanumeric at the ends"
    )


def test_one_constraint_per_key_and_rule():
    assert refusal({"topologySpreadConstraints": [ZONE, ZONE | {"maxSkew": 2}]}) == (
        "topologySpreadConstraints: two constraints of topologyKey topology.kubernetes.io/zone "
        "and whenUnsatisfiable DoNotSchedule"
    )
    other = ZONE | {"whenUnsatisfiable": "ScheduleAnyway"}
    assert len(parse({"topologySpreadConstraints": [ZONE, other]}).topology_spread) == 2


def test_min_domains_only_with_do_not_schedule():
    anyway = ZONE | {"whenUnsatisfiable": "ScheduleAnyway", "minDomains": 2}
    assert refusal({"topologySpreadConstraints": [anyway]}) == (
        "topologySpreadConstraints: minDomains goes with whenUnsatisfiable DoNotSchedule"
    )
    assert parse({"topologySpreadConstraints": [ZONE | {"minDomains": 2}]}).topology_spread


def test_new_fields_default():
    spec = parse({})
    assert (spec.shm_size, spec.volumes, spec.volume_mounts) == ("2Gi", (), ())
    assert (spec.topology_spread, spec.scheduler_name) == ((), None)
    assert spec.model_cache.access_mode == "ReadWriteOnce"
    assert parse({"schedulerName": "s", "shmSize": "512Mi"}).scheduler_name == "s"
