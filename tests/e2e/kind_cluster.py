"""The kind end-to-end suite's helpers. Its cluster (conftest.py) is created once per session, with the images built here and
the chart installed with CPU values; always deleted at the end (E2E_KEEP_CLUSTER=1 keeps it).

Needs docker (with a running engine), kind, helm and kubectl. Where any is missing, every test
of the suite is skipped with one reason, so the default test command stays green.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = "vllm-e2e"
CONTEXT = f"kind-{CLUSTER}"  # every kubectl/helm call names it: never another cluster
NAMESPACE = "vllm-e2e"
OPERATOR_IMAGE = "vllm-operator:e2e"
SERVER_IMAGE = "vllm-server:e2e-cpu"
TOOLS = ("docker", "kind", "helm", "kubectl")


def missing_tools() -> str | None:
    """Why the suite cannot run here, or None."""
    absent = [t for t in TOOLS if shutil.which(t) is None]
    if absent:
        return f"the e2e suite needs {', '.join(absent)} (docker, kind, helm and kubectl)"
    try:
        subprocess.run(["docker", "info"], check=True, capture_output=True, timeout=20)
    except (subprocess.SubprocessError, OSError):
        return "the e2e suite needs a running Docker engine (`docker info` failed)"
    return None


def run(*args: str, timeout: float = 600, check: bool = True) -> str:
    print("$", " ".join(args), file=sys.stderr, flush=True)
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def kubectl(*args: str, **kwargs) -> str:
    return run("kubectl", "--context", CONTEXT, "-n", NAMESPACE, *args, **kwargs)


def wait_until(what: str, predicate, timeout: float = 900, every: float = 3) -> None:
    print(f"waiting for {what}", file=sys.stderr, flush=True)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def build_commands(models: Path) -> list[list[str]]:
    """The commands that build the images and the cluster (also checked statically)."""
    return [
        ["docker", "build", "-f", str(ROOT / "images/operator/Dockerfile"), "-t", OPERATOR_IMAGE, str(ROOT)],
        ["docker", "build", "-f", str(ROOT / "images/server/Dockerfile.cpu"), "-t", SERVER_IMAGE, str(ROOT)],
        ["kind", "create", "cluster", "--name", CLUSTER, "--config", str(models.parent / "kind.yaml"), "--wait", "120s"],
        ["kind", "load", "docker-image", OPERATOR_IMAGE, "--name", CLUSTER],
        ["kind", "load", "docker-image", SERVER_IMAGE, "--name", CLUSTER],
    ]  # fmt: skip


def chart_values() -> dict:
    operator_repo, operator_tag = OPERATOR_IMAGE.split(":")
    return {
        "operator": {"image": {"repository": operator_repo, "tag": operator_tag, "pullPolicy": "Never"}},
        "serverImages": {"gpu": SERVER_IMAGE, "cpu": SERVER_IMAGE},
        "deployments": [
            {
                "name": "tiny",
                "spec": {
                    "model": {"uri": "pvc://models/tiny-llama", "servedName": "tiny-llama"},
                    "accelerator": "CPU",
                    "imagePullPolicy": "Never",
                    "resources": {"requests": {"cpu": "1", "memory": "3Gi"}},
                    "engine": {"dtype": "float32", "maxModelLen": 512, "maxNumSeqs": 8,
                               "enforceEager": True,
                               "extraArgs": ["--kv-cache-memory-bytes", "16777216"]},
                    "lora": {"enabled": True, "maxLoras": 2, "maxRank": 8,
                             "allowedSourceRoots": ["/models"]},
                    "orca": {"formats": ["TEXT", "JSON"]},
                },
            }
        ],
    }  # fmt: skip


MODELS_VOLUME = """
apiVersion: v1
kind: PersistentVolume
metadata: {name: vllm-e2e-models}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadOnlyMany]
  storageClassName: manual
  hostPath: {path: /models}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: models}
spec:
  accessModes: [ReadOnlyMany]
  storageClassName: manual
  volumeName: vllm-e2e-models
  resources: {requests: {storage: 1Gi}}
"""
