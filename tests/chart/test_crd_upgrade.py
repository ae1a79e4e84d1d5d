"""`helm upgrade` brings the CRDs up to date: the chart's pre-install/pre-upgrade hook runs
`python -m vllm_operator.crd_upgrade` on the files of crds/ (Helm itself never upgrades those).
The hook's own command line, taken from the rendered Job, runs here as a process against the
emulator, standing in for the kubelet; Kopf's peering CRDs come from a subchart that
`crds.kopfPeering` turns off."""

from __future__ import annotations

import asyncio
import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml
from helm_python import Chart

from vllm_operator.crd_upgrade import VERSION_ANNOTATION, load, newer, semver_key
from vllm_testkit.chart import CHART, render
from vllm_testkit.kube_emulator import KubeEmulator, api_calls, write_kubeconfig

CRD = kmock.resource("apiextensions.k8s.io/v1/customresourcedefinitions")
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
SHIPPED = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
HOOK = {"helm.sh/hook": "pre-install,pre-upgrade"}


def hook_objects(values: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    return {
        o["kind"]: o
        for o in render(values)
        if (o["metadata"].get("annotations") or {}).get("helm.sh/hook") == HOOK["helm.sh/hook"]
    }


def crd_file(name: str) -> dict[str, Any]:
    return yaml.safe_load((CHART / "crds" / name).read_text())


# --- what the chart renders ----------------------------------------------------------------------


def test_the_hook_applies_the_chart_s_own_crd_files_before_install_and_upgrade():
    objects = hook_objects()
    assert set(objects) == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Job",
    }
    # The files, byte for byte: crds/ stays the one copy.
    assert objects["ConfigMap"]["data"] == {n: (CHART / "crds" / n).read_text() for n in SHIPPED}
    job = objects["Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == [
        "python",
        "-m",
        "vllm_operator.crd_upgrade",
        f"--chart-version={VERSION}",
        *(f"/etc/vllm-crds/{n}" for n in SHIPPED),
    ]
    assert container["image"].startswith("ghcr.io/vllm-k8s/vllm-operator:")
    # Everything goes once it has succeeded (and a failed one is replaced by the next attempt).
    for obj in objects.values():
        assert obj["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == (
            "before-hook-creation,hook-succeeded"
        )
    # The Job runs once its RBAC and files exist.
    weight = {
        k: int(o["metadata"]["annotations"]["helm.sh/hook-weight"]) for k, o in objects.items()
    }
    assert weight["Job"] > max(v for k, v in weight.items() if k != "Job")


def test_the_hook_may_touch_these_crds_only():
    (rule,) = hook_objects()["ClusterRole"]["rules"]
    assert rule == {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["get", "create", "patch"],
        "resourceNames": sorted(crd_file(n)["metadata"]["name"] for n in SHIPPED),
    }


def test_crds_upgrade_false_leaves_the_crds_to_the_user():
    assert hook_objects({"crds": {"upgrade": False}}) == {}


def test_an_operator_of_listed_namespaces_needs_no_cluster_rights_to_upgrade_unless_asked():
    """crds.upgrade auto: off with operator.watchNamespaces (a namespace admin's upgrade must
    not need a ClusterRole); true turns it on there too."""
    listed = {"operator": {"watchNamespaces": ["team-a"]}}
    assert hook_objects(listed) == {}
    assert set(hook_objects({**listed, "crds": {"upgrade": True}})) == {
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Job",
    }  # fmt: skip


def test_cluster_wide_hook_objects_of_two_releases_do_not_collide():
    """A release of one name in two namespaces: each its own ClusterRole and binding (Helm's
    before-hook-creation deletes by name, whoever's it is)."""
    a = hook_objects_in("team-a")
    b = hook_objects_in("team-b")
    for kind in ("ClusterRole", "ClusterRoleBinding"):
        assert a[kind]["metadata"]["name"] != b[kind]["metadata"]["name"]
    assert a["ClusterRoleBinding"]["roleRef"]["name"] == a["ClusterRole"]["metadata"]["name"]


def hook_objects_in(namespace: str) -> dict[str, dict[str, Any]]:
    return {
        o["kind"]: o
        for o in render({}, namespace=namespace)
        if (o["metadata"].get("annotations") or {}).get("helm.sh/hook") == HOOK["helm.sh/hook"]
    }


def test_values_of_an_older_release_still_render():
    """`helm upgrade --reuse-values` keeps the old release's values, which have no `crds` and no
    hook pull policies: the defaults apply."""
    objects = hook_objects({"crds": None, "uninstallHook": {"imagePullPolicy": None}})
    assert "Job" in objects
    (container,) = objects["Job"]["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["memory"] == "192Mi"
    policies = [
        c["imagePullPolicy"]
        for o in render({"crds": None, "uninstallHook": {"imagePullPolicy": None}})
        if o["kind"] == "Job"
        for c in o["spec"]["template"]["spec"]["containers"]
    ]
    assert policies and all(p == "IfNotPresent" for p in policies)


def test_kopf_s_shared_peering_crds_come_from_a_subchart_that_can_be_left_out():
    chart = Chart.load(str(CHART))
    (dependency,) = chart.metadata["dependencies"]
    assert dependency["name"] == "kopf-peering" and dependency["condition"] == "crds.kopfPeering"
    assert {Path(c["name"]).name for c in chart.crds} == {
        *SHIPPED,
        "clusterkopfpeerings.kopf.dev.yaml",
        "kopfpeerings.kopf.dev.yaml",
    }
    # Not ours to upgrade: the hook refuses them.
    for path in (CHART / "charts" / "kopf-peering" / "crds").glob("*.yaml"):
        with pytest.raises(ValueError, match=r"only serving\.vllm\.ai CRDs"):
            load([path])
    chart.validate_schema({"crds": {"kopfPeering": False}})
    assert render({"crds": {"kopfPeering": False}})


# --- the program ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("older", "younger"),
    [
        ("0.1.0", "0.2.0"),
        ("0.9.0", "0.10.0"),
        ("1.0.0-rc.1", "1.0.0"),
        ("1.0.0-alpha", "1.0.0-alpha.1"),
        ("1.0.0-alpha.2", "1.0.0-alpha.10"),
        ("1.0.0-2", "1.0.0-alpha"),
    ],
)
def test_chart_versions_order_as_semver_does(older: str, younger: str):
    assert newer(younger, older) and not newer(older, younger)
    assert semver_key("1.2.3+build.5") == semver_key("1.2.3")


def test_an_unmarked_or_unreadable_version_in_the_cluster_is_overwritten():
    assert not newer(None, "0.1.0")
    assert not newer("latest", "0.1.0")


def run_hook(
    tmp_path: Path, kubeconfig: Path, values: dict | None = None
) -> subprocess.CompletedProcess:
    """What the kubelet would run for the rendered Job: its command, the ConfigMap's files at
    its mount path. (In a thread: the emulator answers on the test's event loop.)"""
    objects = hook_objects(values)
    files = tmp_path / "crds"
    files.mkdir(exist_ok=True)
    for name, text in objects["ConfigMap"]["data"].items():
        (files / name).write_text(text)
    (container,) = objects["Job"]["spec"]["template"]["spec"]["containers"]
    command = [sys.executable, *container["command"][1:]]
    command = [c.replace("/etc/vllm-crds", str(files)) for c in command]
    return subprocess.run(
        command,
        env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def cluster_crd(emulator, name: str) -> dict[str, Any]:
    return emulator.objects[CRD, None, name].raw


def declare_crds(emulator) -> None:
    emulator.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = {
        "kind": "CustomResourceDefinition",
        "namespaced": False,
        "verbs": ["create", "get", "list", "watch", "patch", "update", "delete"],
    }


def an_older_release_of(name: str) -> dict[str, Any]:
    """The CRD as an older chart installed it: one field less, no version mark."""
    old = copy.deepcopy(crd_file(name))
    (version,) = old["spec"]["versions"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"].pop(sorted(spec["properties"])[0])
    return old


@pytest.mark.asyncio
@pytest.mark.kmock(cls=KubeEmulator)
async def test_upgrade_path_brings_older_crds_up_to_date_and_deletes_nothing(kmock, tmp_path):
    declare_crds(kmock)
    for name in SHIPPED:
        response = await kmock.post(CRD_PATH, json=an_older_release_of(name))
        assert response.status == 200
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url))

    done = await asyncio.to_thread(run_hook, tmp_path, kubeconfig)

    assert done.returncode == 0, done.stderr
    records = [yaml.safe_load(line) for line in done.stdout.splitlines()]
    assert [(r["crd"], r["action"]) for r in records] == [
        (crd_file(n)["metadata"]["name"], "updated") for n in SHIPPED
    ]
    for name in SHIPPED:
        shipped = crd_file(name)
        now = cluster_crd(kmock, shipped["metadata"]["name"])
        assert now["spec"] == shipped["spec"]
        assert now["metadata"]["annotations"][VERSION_ANNOTATION] == VERSION
    # Every call is one the hook's ClusterRole grants; nothing is ever deleted.
    (rule,) = hook_objects()["ClusterRole"]["rules"]
    calls = api_calls(kmock)
    assert calls <= {
        (v, "apiextensions.k8s.io", "customresourcedefinitions") for v in rule["verbs"]
    }
    names = {r.name for r in kmock if r.resource == CRD and r.name}
    assert names <= set(rule["resourceNames"])


@pytest.mark.asyncio
@pytest.mark.kmock(cls=KubeEmulator)
async def test_a_fresh_cluster_gets_the_crds_and_a_second_run_changes_nothing(kmock, tmp_path):
    declare_crds(kmock)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url))

    first = await asyncio.to_thread(run_hook, tmp_path, kubeconfig)
    again = await asyncio.to_thread(run_hook, tmp_path, kubeconfig)

    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    assert {yaml.safe_load(line)["action"] for line in first.stdout.splitlines()} == {"created"}
    assert {yaml.safe_load(line)["action"] for line in again.stdout.splitlines()} == {"updated"}
    for name in SHIPPED:
        assert (
            cluster_crd(kmock, crd_file(name)["metadata"]["name"])["spec"] == crd_file(name)["spec"]
        )


@pytest.mark.asyncio
@pytest.mark.kmock(cls=KubeEmulator)
async def test_crds_a_newer_chart_wrote_are_kept(kmock, tmp_path):
    """Two releases of different chart versions in one cluster (namespaced mode): the older
    one's upgrade must not take the newer CRDs back."""
    declare_crds(kmock)
    for name in SHIPPED:
        newer_crd = an_older_release_of(name)  # different from ours, whatever its content
        newer_crd["metadata"]["annotations"] = {VERSION_ANNOTATION: "99.0.0"}
        assert (await kmock.post(CRD_PATH, json=newer_crd)).status == 200
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url))

    done = await asyncio.to_thread(run_hook, tmp_path, kubeconfig)

    assert done.returncode == 0, done.stderr
    assert {yaml.safe_load(line)["action"] for line in done.stdout.splitlines()} == {"kept"}
    assert not any(verb == "patch" for verb, _, _ in api_calls(kmock))
    for name in SHIPPED:
        kept = cluster_crd(kmock, crd_file(name)["metadata"]["name"])
        assert kept["metadata"]["annotations"][VERSION_ANNOTATION] == "99.0.0"


@pytest.mark.asyncio
@pytest.mark.kmock(cls=KubeEmulator)
async def test_a_refused_apply_fails_the_hook_with_the_api_server_s_words(kmock, tmp_path):
    """A failed hook fails `helm upgrade` before anything else changed; its log says why."""
    declare_crds(kmock)
    kmock.refusals[("patch", "customresourcedefinitions", None)] = (
        422,
        "spec.versions: Invalid value: must have exactly one version marked as storage version",
    )
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url))

    done = await asyncio.to_thread(run_hook, tmp_path, kubeconfig)

    assert done.returncode == 1
    assert "must have exactly one version marked as storage version" in done.stderr


@pytest.mark.asyncio
@pytest.mark.kmock(cls=KubeEmulator)
async def test_a_crd_being_deleted_is_not_brought_back_by_the_hook(kmock, tmp_path):
    declare_crds(kmock)
    name = SHIPPED[0]
    dying = crd_file(name)
    dying["metadata"]["deletionTimestamp"] = "2026-11-26T00:00:00Z"
    dying["metadata"]["finalizers"] = ["customresourcecleanup.apiextensions.k8s.io"]
    assert (await kmock.post(CRD_PATH, json=dying)).status == 200
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url))

    done = await asyncio.to_thread(run_hook, tmp_path, kubeconfig)

    assert done.returncode == 1
    assert f"{dying['metadata']['name']} is being deleted" in done.stderr
    assert not any(verb == "patch" for verb, _, _ in api_calls(kmock))


def test_a_bad_chart_version_or_file_is_a_one_line_error(tmp_path):
    bad = subprocess.run(
        [sys.executable, "-m", "vllm_operator.crd_upgrade", "--chart-version=latest", "x.yaml"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "not a semantic version" in bad.stderr
    other = tmp_path / "other.yaml"
    other.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    refused = subprocess.run(
        [sys.executable, "-m", "vllm_operator.crd_upgrade", "--chart-version=1.0.0", str(other)],
        capture_output=True,
        text=True,
        env={"KUBECONFIG": "/nonexistent", "PATH": "/usr/bin:/bin"},
    )
    assert refused.returncode == 2 and "only serving.vllm.ai CRDs" in refused.stderr
