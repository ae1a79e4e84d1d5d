"""The whole story on a kind cluster, checked as a user would (tests run in file order and share
the cluster). Run it with `make e2e`; it has not run on the project's own machines, which have
no Docker engine."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from datetime import datetime

import httpx
import pytest

from vllm_testkit.envoy_orca import parse
from vllm_testkit.kind_cluster import (
    CONTEXT,
    NAMESPACE,
    RELEASE,
    SERVER_PODS,
    PortForward,
    kubectl,
    run,
    say,
    wait_until,
)
from vllm_testkit.tiny_model import CPU_ENGINE

# The first test's setup builds the images and the cluster (pytest-timeout counts fixtures).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(5400)]

ADAPTERS_LOADED = "serving.vllm.ai/adapters-loaded"  # the readiness gate of LoRA-serving pods


@contextlib.contextmanager
def port_forward(target: str, port: int = 8000):
    forward = PortForward(target, port)
    try:
        yield forward
    finally:
        forward.close()


def pods() -> list[dict]:
    return json.loads(kubectl("get", "pods", "-l", SERVER_PODS, "-o", "json"))["items"]


def get(kind: str, name: str) -> dict:
    return json.loads(kubectl("get", kind, name, "-o", "json"))


def conditions(obj: dict) -> dict[str, dict]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def condition(obj: dict, type_: str) -> str | None:
    return conditions(obj).get(type_, {}).get("status")


def test_liveness_answers_while_readiness_is_still_503(cluster):
    wait_until("a server pod running", lambda: any(
        p["status"].get("phase") == "Running" for p in pods()
    ), timeout=600)  # fmt: skip
    pod = next(p for p in pods() if p["status"].get("phase") == "Running")["metadata"]["name"]
    # The server logs `listening` once its port accepts: a forward started earlier may be
    # refused, and kubectl then exits.
    wait_until(f"{pod} to log `listening`", lambda: "listening" in kubectl(
        "logs", f"pod/{pod}", check=False
    ), timeout=120, every=1)  # fmt: skip
    seen = set()
    with port_forward(f"pod/{pod}") as forward:
        say("polling /health and /ready until /ready is 200 (up to 900 s)")
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):  # the forward restarts next round
                health = httpx.get(f"{forward.url}/health", timeout=5).status_code
                ready = httpx.get(f"{forward.url}/ready", timeout=5)
                json_body = ready.headers.get("content-type", "").startswith("application/json")
                phase = ready.json().get("phase") if json_body else None
                if (health, ready.status_code, phase) not in seen:
                    say(f"  /health {health}, /ready {ready.status_code} {phase or ''}")
                seen.add((health, ready.status_code, phase))
                if ready.status_code == 200:
                    break
            time.sleep(0.5)
    assert any(h == 200 and r == 503 for h, r, _ in seen), seen  # live, not ready yet
    assert any(r == 200 for _, r, _ in seen), seen
    say("waiting for vllmd/tiny Available")
    kubectl("wait", "vllmd/tiny", "--for=condition=Available", "--timeout=15m", timeout=960)


def test_completion_orca_and_token_metrics_through_the_service(cluster):
    with port_forward("svc/tiny") as forward:
        reply = httpx.post(
            f"{forward.url}/v1/completions",
            json={"model": "tiny-llama", "prompt": "hello", "max_tokens": 8},
            timeout=120,
        )
        assert reply.status_code == 200, reply.text
        report = parse(reply.headers["endpoint-load-metrics"])
        assert report.application_utilization > 0
        assert "num_tokens_running" in report.named_metrics
        metrics = httpx.get(f"{forward.url}/metrics", timeout=30).text
        assert "vllm:num_tokens_running" in metrics
        assert "vllm:num_tokens_waiting" in metrics
    status = get("vllmd", "tiny")["status"]
    assert status["readyReplicas"] == 1
    assert status["url"] == f"http://tiny.{NAMESPACE}.svc:8000/v1"


def apply(manifest: dict) -> None:
    subprocess.run(
        ["kubectl", "--context", CONTEXT, "-n", NAMESPACE, "apply", "-f", "-"],
        input=json.dumps(manifest), text=True, check=True, capture_output=True,
    )  # fmt: skip


def served(pod: str) -> set[str]:
    with port_forward(f"pod/{pod}") as forward:
        models = httpx.get(f"{forward.url}/v1/models", timeout=30).json()["data"]
    return {m["id"] for m in models}


def test_lora_routes_are_on_the_admin_port_only(cluster):
    (pod,) = pods()
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == 8000 and ports["admin"] == 8001, ports
    # Through the Service (the API port), a client cannot load adapters of its own.
    with port_forward("svc/tiny") as forward:
        reply = httpx.post(
            f"{forward.url}/v1/load_lora_adapter",
            json={"lora_name": "sneaky", "lora_path": "/models/sql"},
            timeout=30,
        )
    assert reply.status_code == 404, reply.text
    assert reply.json()["error"]["message"] == "LoRA adapters are managed on the admin port"
    # On the admin port itself (a port-forward passes any NetworkPolicy), only the operator's
    # token loads: its key is in the chart's Secret, the pod has the public half.
    with port_forward(f"pod/{pod['metadata']['name']}", ports["admin"]) as forward:
        reply = httpx.post(
            f"{forward.url}/v1/load_lora_adapter",
            json={"lora_name": "sneaky", "lora_path": "/models/sql"},
            timeout=30,
        )
    assert reply.status_code == 401, reply.text
    assert "sneaky" not in served(pod["metadata"]["name"])


def turned_true(pod: dict, type_: str) -> datetime:
    """When the condition, True now, last changed."""
    found = conditions(pod)[type_]
    assert found["status"] == "True", found
    return datetime.fromisoformat(found["lastTransitionTime"].replace("Z", "+00:00"))


def test_lora_adapter_restart_scale_and_delete(cluster):
    # The operator loads adapters through the admin port, which the API port's 404 leaves alone.
    apply({
        "apiVersion": "serving.vllm.ai/v1alpha1", "kind": "LoraAdapter",
        "metadata": {"name": "sql"},
        "spec": {"deploymentRef": {"name": "tiny"}, "source": {"uri": "/models/sql"}},
    })  # fmt: skip
    say("waiting for lora/sql Ready")
    kubectl("wait", "lora/sql", "--for=condition=Ready", "--timeout=5m", timeout=330)
    entries = get("lora", "sql")["status"]["pods"]
    assert [e["loaded"] for e in entries] == [True]
    with port_forward("svc/tiny") as forward:
        reply = httpx.post(f"{forward.url}/v1/completions",
                           json={"model": "sql", "prompt": "select", "max_tokens": 4}, timeout=120)  # fmt: skip
        assert reply.status_code == 200, reply.text

    # A deleted pod's replacement holds the adapter before it turns Ready (the readiness gate).
    (old,) = [p["metadata"]["name"] for p in pods()]
    kubectl("delete", "pod", old, "--wait=true", timeout=300)
    wait_until("the replacement pod Ready", lambda: any(
        condition(p, "Ready") == "True" and p["metadata"]["name"] != old for p in pods()
    ), timeout=900)  # fmt: skip
    new = next(p for p in pods() if p["metadata"]["name"] != old)
    assert {"conditionType": ADAPTERS_LOADED} in new["spec"]["readinessGates"]
    # The adapter was back on the new pod before it turned Ready (the gate may open before the
    # kubelet's next probe marks the container ready: Ready needs both).
    gate = turned_true(new, ADAPTERS_LOADED)
    started = datetime.fromisoformat(new["status"]["startTime"].replace("Z", "+00:00"))
    assert started <= gate <= turned_true(new, "Ready"), conditions(new)
    assert "sql" in served(new["metadata"]["name"])

    # Scale out: the new replica gets it too.
    kubectl("scale", "vllmd/tiny", "--replicas=2")
    wait_until(
        "the adapter on 2 pods",
        lambda: get("lora", "sql")["status"].get("loadedPods") == 2,
        timeout=900,
    )

    # Delete: unloaded everywhere, then gone.
    kubectl("delete", "lora/sql", "--wait=true", timeout=300)
    for pod in pods():
        assert "sql" not in served(pod["metadata"]["name"])


LWS_MANIFESTS = "https://github.com/kubernetes-sigs/lws/releases/download/v0.10.0/manifests.yaml"


def test_a_two_node_replica_on_leader_worker_set(cluster):
    """LeaderWorkerSet installed, a VLLMDeployment of two pods per replica (tensor parallel 2
    over two CPU pods, vLLM's multi-node mode): the group serves through the Service, and a
    worker deleted recreates its whole group, which serves again."""
    run("kubectl", "--context", CONTEXT, "apply", "--server-side", "-f", LWS_MANIFESTS)
    run("kubectl", "--context", CONTEXT, "-n", "lws-system", "wait",
        "deploy/lws-controller-manager", "--for=condition=Available", "--timeout=5m")  # fmt: skip
    spec = {
        "model": {"uri": "pvc://models/tiny-llama", "servedName": "tiny-llama"},
        "accelerator": "CPU",
        "imagePullPolicy": "Never",
        "resources": {"requests": {"cpu": "500m", "memory": "2Gi"}},
        "engine": CPU_ENGINE,
        "parallelism": {"tensor": 2, "nodes": 2},
    }
    apply({"apiVersion": "serving.vllm.ai/v1alpha1", "kind": "VLLMDeployment",
           "metadata": {"name": "group"}, "spec": spec})  # fmt: skip
    group = "leaderworkerset.sigs.k8s.io/name=group"
    kubectl("wait", "vllmd/group", "--for=condition=Available", "--timeout=20m", timeout=1260)
    leader = json.loads(kubectl("get", "pod", "group-0", "-o", "json"))
    worker = json.loads(kubectl("get", "pod", "group-0-1", "-o", "json"))
    assert "--headless" in worker["spec"]["containers"][0]["args"]
    with port_forward("svc/group") as forward:
        reply = httpx.post(f"{forward.url}/v1/completions", timeout=120, json={
            "model": "tiny-llama", "prompt": "Hello", "max_tokens": 4})  # fmt: skip
        assert reply.status_code == 200, reply.text
    kubectl("delete", "pod", "group-0-1", "--wait=false")
    wait_until("the group recreated", lambda: json.loads(kubectl(
        "get", "pod", "group-0", "-o", "json", check=False) or "{}"
    ).get("metadata", {}).get("uid") not in (None, leader["metadata"]["uid"]), timeout=300)  # fmt: skip
    kubectl("wait", "vllmd/group", "--for=condition=Available", "--timeout=20m", timeout=1260)
    kubectl("delete", "vllmd/group", "--wait=true", timeout=300)
    wait_until("the group's pods gone", lambda: not json.loads(
        kubectl("get", "pods", "-l", group, "-o", "json")
    )["items"], timeout=300)  # fmt: skip


def left(selector: str, kinds: str) -> list[str]:
    """Objects of `kinds` in any namespace matching the label selector."""
    found = run("kubectl", "--context", CONTEXT, "get", kinds, "-A", "-l", selector, "-o", "name")
    return found.split()


def test_the_crd_hook_applied_the_chart_s_crds(cluster):
    """The pre-install hook (the operator's image, python -m vllm_operator.crd_upgrade) ran and
    went: each CRD carries the chart's version, and the hook's objects are gone."""
    chart_version = run("helm", "--kube-context", CONTEXT, "list", "-n", NAMESPACE, "-o", "json")
    (release,) = [r for r in json.loads(chart_version) if r["name"] == RELEASE]
    for crd in ("vllmdeployments.serving.vllm.ai", "loraadapters.serving.vllm.ai"):
        annotations = get("crd", crd)["metadata"].get("annotations") or {}
        assert release["chart"] == f"vllm-{annotations['serving.vllm.ai/chart-version']}", crd
    assert not left("app.kubernetes.io/component=crds", "job,cm,sa,clusterrole")


def test_helm_test_then_uninstall_leaves_only_crds(cluster):
    run("helm", "--kube-context", CONTEXT, "test", RELEASE, "-n", NAMESPACE, "--timeout", "10m",
        timeout=660)  # fmt: skip
    run("helm", "--kube-context", CONTEXT, "uninstall", RELEASE, "-n", NAMESPACE, "--wait",
        "--timeout", "5m", timeout=330)  # fmt: skip
    # The README: the release's objects go, and so do the servers' (owner references, which
    # garbage collection follows in the background); CRDs stay, and whatever the user created
    # with kubectl (here the models volume).
    release = f"app.kubernetes.io/instance={RELEASE}"
    chart_kinds = "all,sa,role,rolebinding,cm,pdb,pvc,job,clusterrole,clusterrolebinding"
    wait_until("nothing labelled with the release", lambda: not left(
        release, f"{chart_kinds},clusterkopfpeerings.kopf.dev,kopfpeerings.kopf.dev"
    ), timeout=300)  # fmt: skip
    servers = "app.kubernetes.io/managed-by=vllm-operator"
    wait_until("nothing the operator made", lambda: not left(
        servers, "all,sa,cm,pdb,pvc,networkpolicy"
    ), timeout=300)  # fmt: skip
    wait_until("no VLLMDeployment or LoraAdapter", lambda: not run(
        "kubectl", "--context", CONTEXT, "get", "vllmd,lora", "-A", "-o", "name"
    ).strip(), timeout=120)  # fmt: skip
    crds = run("kubectl", "--context", CONTEXT, "get", "crd", "-o", "name").split()
    for crd in ("vllmdeployments.serving.vllm.ai", "loraadapters.serving.vllm.ai"):
        assert f"customresourcedefinition.apiextensions.k8s.io/{crd}" in crds, crds
    assert kubectl("get", "pvc", "models", "-o", "name").strip()  # the user's own
