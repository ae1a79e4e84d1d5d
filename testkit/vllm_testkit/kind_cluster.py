"""The kind end-to-end suite's helpers. Its cluster (conftest.py) is created once per session, with
the images built here and the chart installed with CPU values; always deleted at the end
(E2E_KEEP_CLUSTER=1 keeps it).

Needs docker (with a running engine), kind, helm and kubectl. Where any is missing, every test
of the suite is skipped with one reason, so the default test command stays green.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .tiny_model import CPU_ENGINE

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = "vllm-e2e"
CONTEXT = f"kind-{CLUSTER}"  # every kubectl/helm call names it: never another cluster
NAMESPACE = "vllm-e2e"
RELEASE = "vllm"
DEPLOYMENT = "tiny"  # the VLLMDeployment of the chart values
SERVER_PODS = f"serving.vllm.ai/deployment={DEPLOYMENT}"
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


def say(message: str) -> None:
    """Progress on the terminal (`make e2e` runs pytest with -s)."""
    print(message, file=sys.stderr, flush=True)


def run(*args: str, timeout: float = 600, check: bool = True) -> str:
    say(f"$ {' '.join(args)}")
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def kubectl(*args: str, **kwargs) -> str:
    return run("kubectl", "--context", CONTEXT, "-n", NAMESPACE, *args, **kwargs)


def wait_until(what: str, predicate, timeout: float = 600, every: float = 3) -> None:
    say(f"waiting (up to {timeout:.0f} s) for {what}")
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"timed out after {timeout:.0f} s: {what}"
        time.sleep(every)
    say(f"  ... {what}: after {time.monotonic() - start:.0f} s")


class PortForward:
    """`kubectl port-forward` to a free local port. Its output goes to a file (a pipe nobody
    reads blocks it once full); `url` starts it again when it has exited (kubectl may exit after
    a refused connection)."""

    def __init__(self, target: str, port: int) -> None:
        self.target, self.port = target, port
        self.proc: subprocess.Popen | None = None
        self.output = Path(tempfile.mkstemp(prefix="e2e-port-forward-", suffix=".log")[1])
        self._url = ""

    @property
    def url(self) -> str:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        return self._url

    def _start(self) -> None:
        argv = ["kubectl", "--context", CONTEXT, "-n", NAMESPACE, "port-forward", self.target]
        say(f"$ {' '.join(argv)} :{self.port}")
        with self.output.open("w") as out:
            self.proc = subprocess.Popen([*argv, f":{self.port}"], stdout=out, stderr=out)
        deadline = time.monotonic() + 30
        while not (found := re.search(r"127\.0\.0\.1:(\d+)", self.output.read_text())):
            exited = self.proc.poll() is not None
            assert not exited, f"port-forward exited: {self.output.read_text()}"
            assert time.monotonic() < deadline, f"port-forward said: {self.output.read_text()}"
            time.sleep(0.1)
        self._url = f"http://127.0.0.1:{found.group(1)}"

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.output.unlink(missing_ok=True)


def build_commands(models: Path) -> list[list[str]]:
    """The commands that build the images and the cluster, and load the images into it."""
    return [
        ["docker", "build", "-f", str(ROOT / "images/operator/Dockerfile"), "-t", OPERATOR_IMAGE, str(ROOT)],
        ["docker", "build", "-f", str(ROOT / "images/server/Dockerfile.cpu"), "-t", SERVER_IMAGE, str(ROOT)],
        ["kind", "create", "cluster", "--name", CLUSTER, "--config", str(models.parent / "kind.yaml"), "--wait", "120s"],
        ["kind", "load", "docker-image", OPERATOR_IMAGE, "--name", CLUSTER],
        ["kind", "load", "docker-image", SERVER_IMAGE, "--name", CLUSTER],
    ]  # fmt: skip


def install_commands(work: Path) -> list[list[str]]:
    """The commands that install the models volume and the chart (files written by setup)."""
    return [
        ["kubectl", "--context", CONTEXT, "create", "namespace", NAMESPACE],
        ["kubectl", "--context", CONTEXT, "-n", NAMESPACE, "apply", "-f", str(work / "models.yaml")],
        ["helm", "--kube-context", CONTEXT, "install", RELEASE, str(ROOT / "charts/vllm"),
         "-n", NAMESPACE, "-f", str(work / "values.json"), "--wait", "--timeout", "10m"],
    ]  # fmt: skip


def set_up(models: Path) -> None:
    """Writes the kind config, the models volume and the chart values next to `models`, then
    builds the images, creates the cluster, loads the images and installs the chart."""
    work = models.parent
    kind_config = (ROOT / "tests/e2e/kind-config.yaml").read_text()
    (work / "kind.yaml").write_text(kind_config.replace("${E2E_MODELS}", str(models)))
    (work / "models.yaml").write_text(MODELS_VOLUME)
    (work / "values.json").write_text(json.dumps(chart_values()))
    for command in build_commands(models):
        run(*command, timeout=3600)  # the CPU server image is several GB
    for command in install_commands(work):
        run(*command, timeout=900)


def diagnostics() -> list[tuple[str, str]]:
    """What to look at when something failed: (title, output) pairs."""
    sections = []
    for args in (
        ("logs", "-l", "app.kubernetes.io/name=vllm-operator", "--prefix", "--tail", "200"),
        ("logs", "-l", SERVER_PODS, "--prefix", "--tail", "200"),
        ("get", "events", "-A", "--sort-by", ".lastTimestamp"),
        ("get", "vllmd,lora", "-o", "yaml"),
        ("describe", "pods"),
    ):
        done = subprocess.run(
            ["kubectl", "--context", CONTEXT, "-n", NAMESPACE, *args],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        sections.append((f"kubectl {' '.join(args)}", done.stdout + done.stderr))
    return sections


def chart_values() -> dict:
    operator_repo, operator_tag = OPERATOR_IMAGE.split(":")
    return {
        "operator": {"image": {"repository": operator_repo, "tag": operator_tag, "pullPolicy": "Never"}},
        "serverImages": {"gpu": SERVER_IMAGE, "cpu": SERVER_IMAGE},
        "deployments": [
            {
                "name": DEPLOYMENT,
                "spec": {
                    "model": {"uri": "pvc://models/tiny-llama", "servedName": "tiny-llama"},
                    "accelerator": "CPU",
                    "imagePullPolicy": "Never",
                    "resources": {"requests": {"cpu": "1", "memory": "3Gi"}},
                    "engine": CPU_ENGINE,
                    "lora": {"enabled": True, "maxLoras": 2, "maxRank": 8,
                             "allowedSourceRoots": ["/models"]},
                    "orca": {"formats": ["TEXT", "JSON"]},
                },
            }
        ],
    }  # fmt: skip


# The node's /models (the generated model and adapters, see kind-config.yaml) as the claim
# `models`, which the pods mount at /models (pvc:// models).
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
