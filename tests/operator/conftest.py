"""The operator's tests: the emulated API server as the operator's cluster, and the record of
every API call the operator made (the chart's RBAC must grant each)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import kubernetes
import pytest

from vllm_testkit.kube_emulator import SEEN_CALLS, write_kubeconfig
from vllm_testkit.samples import IMAGES

# A new call fails the tests until it is added (UPDATE_GOLDEN=1 rewrites the file).
API_CALLS_FILE = Path(__file__).parents[1] / "golden" / "operator-api-calls.json"


@pytest.fixture
def kubeconfig(kmock, tmp_path, monkeypatch):
    """Points the operator (Kopf's login and our client) at the `kmock` emulator."""
    path = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url))
    monkeypatch.setenv("KUBECONFIG", str(path))
    # `kubernetes` read $KUBECONFIG into this default when it was first imported.
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("VLLM_SERVER_IMAGE_GPU", IMAGES.gpu)
    monkeypatch.setenv("VLLM_SERVER_IMAGE_CPU", IMAGES.cpu)
    monkeypatch.setenv("POD_NAMESPACE", "vllm-system")
    return path


@pytest.fixture(scope="session", autouse=True)
def operator_api_calls():
    """After the session: every API call the operator made is in the record for the RBAC."""
    yield
    if not SEEN_CALLS:
        return  # no operator ran in this session (e.g. only pure tests were selected)
    recorded = {tuple(c) for c in json.loads(API_CALLS_FILE.read_text())}
    if os.environ.get("UPDATE_GOLDEN"):
        lines = ",\n".join(f"  {json.dumps(c)}" for c in sorted(recorded | SEEN_CALLS))
        API_CALLS_FILE.write_text(f"[\n{lines}\n]\n")
        return
    assert recorded >= SEEN_CALLS, f"new API calls, add them: {sorted(SEEN_CALLS - recorded)}"
