"""The whole story on a kind cluster, checked as a user would (tests run in file order and share
the cluster). Run it with `make e2e`; it has not run on the project's own machines, which have
no Docker engine."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time

import httpx
import pytest
from kind_cluster import CONTEXT, NAMESPACE, ROOT, kubectl, run, wait_until

pytestmark = pytest.mark.e2e

sys.path.insert(0, str(ROOT / "tests"))
from envoy_orca import parse  # noqa: E402

SELECTOR = "serving.vllm.ai/deployment=tiny"


@contextlib.contextmanager
def port_forward(target: str, port: int = 8000):
    """`kubectl port-forward` to a free local port; yields the base URL."""
    proc = subprocess.Popen(
        ["kubectl", "--context", CONTEXT, "-n", NAMESPACE, "port-forward", target, f":{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert match, f"port-forward said: {line}"
        yield f"http://127.0.0.1:{match.group(1)}"
    finally:
        proc.terminate()
        proc.wait(10)


def pods() -> list[dict]:
    return json.loads(kubectl("get", "pods", "-l", SELECTOR, "-o", "json"))["items"]


def get(kind: str, name: str) -> dict:
    return json.loads(kubectl("get", kind, name, "-o", "json"))


def condition(obj: dict, type_: str) -> str | None:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c["status"] for c in conditions if c["type"] == type_), None)


def test_liveness_answers_while_readiness_is_still_503(cluster):
    wait_until("a server pod running", lambda: any(
        p["status"].get("phase") == "Running" for p in pods()
    ))  # fmt: skip
    pod = next(p for p in pods() if p["status"].get("phase") == "Running")["metadata"]["name"]
    seen = set()
    with port_forward(f"pod/{pod}") as url:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                health = httpx.get(f"{url}/health", timeout=5).status_code
                ready = httpx.get(f"{url}/ready", timeout=5)
                seen.add((health, ready.status_code, ready.json().get("phase")))
                if ready.status_code == 200:
                    break
            time.sleep(0.5)
    assert any(h == 200 and r == 503 for h, r, _ in seen), seen  # live, not ready yet
    assert any(r == 200 for _, r, _ in seen), seen
    kubectl("wait", "vllmd/tiny", "--for=condition=Available", "--timeout=15m", timeout=960)


def test_completion_orca_and_token_metrics_through_the_service(cluster):
    with port_forward("svc/tiny") as url:
        reply = httpx.post(
            f"{url}/v1/completions",
            json={"model": "tiny-llama", "prompt": "hello", "max_tokens": 8},
            timeout=120,
        )
        assert reply.status_code == 200, reply.text
        report = parse(reply.headers["endpoint-load-metrics"])
        assert report.application_utilization > 0
        assert "num_tokens_running" in report.named_metrics
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
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
    with port_forward(f"pod/{pod}") as url:
        models = httpx.get(f"{url}/v1/models", timeout=30).json()["data"]
    return {m["id"] for m in models}


def test_lora_adapter_restart_scale_and_delete(cluster):
    apply({
        "apiVersion": "serving.vllm.ai/v1alpha1", "kind": "LoraAdapter",
        "metadata": {"name": "sql"},
        "spec": {"deploymentRef": {"name": "tiny"}, "source": {"uri": "/models/sql"}},
    })  # fmt: skip
    kubectl("wait", "lora/sql", "--for=condition=Ready", "--timeout=5m", timeout=330)
    entries = get("lora", "sql")["status"]["pods"]
    assert [e["loaded"] for e in entries] == [True]
    with port_forward("svc/tiny") as url:
        reply = httpx.post(f"{url}/v1/completions",
                           json={"model": "sql", "prompt": "select", "max_tokens": 4}, timeout=120)  # fmt: skip
        assert reply.status_code == 200, reply.text

    # A deleted pod's replacement holds the adapter before it turns Ready (the readiness gate).
    (old,) = [p["metadata"]["name"] for p in pods()]
    kubectl("delete", "pod", old, "--wait=true", timeout=300)
    wait_until("the replacement pod Ready", lambda: any(
        condition(p, "Ready") == "True" and p["metadata"]["name"] != old for p in pods()
    ))  # fmt: skip
    new = next(p for p in pods() if p["metadata"]["name"] != old)
    assert condition(new, "serving.vllm.ai/adapters-loaded") == "True"
    assert "sql" in served(new["metadata"]["name"])

    # Scale out: the new replica gets it too.
    kubectl("scale", "vllmd/tiny", "--replicas=2")
    wait_until("the adapter on 2 pods", lambda: get("lora", "sql")["status"].get("loadedPods") == 2)

    # Delete: unloaded everywhere, then gone.
    kubectl("delete", "lora/sql", "--wait=true", timeout=300)
    for pod in pods():
        assert "sql" not in served(pod["metadata"]["name"])


def test_helm_test_then_uninstall_leaves_only_crds(cluster):
    run("helm", "--kube-context", CONTEXT, "test", "vllm", "-n", NAMESPACE, "--timeout", "10m")
    run("helm", "--kube-context", CONTEXT, "uninstall", "vllm", "-n", NAMESPACE, "--wait",
        "--timeout", "5m")  # fmt: skip
    wait_until("the release's objects gone", lambda: kubectl(
        "get", "deployments,services,pods,vllmd,lora", "-o", "name"
    ).strip() == "")  # fmt: skip
    crds = run("kubectl", "--context", CONTEXT, "get", "crd", "-o", "name")
    assert "vllmdeployments.serving.vllm.ai" in crds  # Helm never deletes CRDs (documented)
