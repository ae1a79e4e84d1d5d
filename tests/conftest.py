"""Fixtures every area shares: the generated tiny model and LoRA adapters (generated once per
session; numpy and the tokenizer trainer are imported only when a test asks for them), and the
emulated API server as the operator's cluster (`kubeconfig`) with the record of every API call
the operator made there (the chart's RBAC grants exactly these: tests/chart checks the
ClusterRole against the record both ways).

The record is honest both ways: a call missing from it fails the test that made it; a recorded
call no test made fails a full run (every test of tests/operator and tests/security selected and
passed), so a grant the operator does not need cannot hide behind a made-up record.
UPDATE_GOLDEN=1 rewrites the record from what a full run saw (a partial run only adds), and then
fails: review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import kubernetes
import pytest

from vllm_testkit import api_record
from vllm_testkit.kube_emulator import SEEN_CALLS, write_kubeconfig
from vllm_testkit.samples import IMAGES


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vllm_testkit.tiny_model import generate_model

    return generate_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_lora(tiny_model: Path) -> Path:
    from vllm_testkit.tiny_model import generate_lora

    return generate_lora(tiny_model.parent / "lora-r8", base_model=tiny_model, rank=8)


@pytest.fixture(scope="session")
def tiny_lora_r16(tiny_model: Path) -> Path:
    from vllm_testkit.tiny_model import generate_lora

    return generate_lora(tiny_model.parent / "lora-r16", base_model=tiny_model, rank=16)


TESTS = Path(__file__).parent
# The folders whose tests run the operator against the emulator (the `kubeconfig` fixture).
OPERATOR_DIRS = (TESTS / "operator", TESTS / "security")
API_CALLS_FILE = TESTS / "golden" / "operator-api-calls.json"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
_run = {"partial": False}  # whether this session runs less than every operator test here


def _runs_the_operator(item: pytest.Item) -> bool:
    return "kubeconfig" in getattr(item, "fixturenames", ())


def pytest_collection_finish(session: pytest.Session) -> None:
    files = {Path(i.path) for i in session.items if Path(i.path).parent in OPERATOR_DIRS}
    if files != {f for d in OPERATOR_DIRS for f in d.glob("test_*.py")}:
        _run["partial"] = True


def pytest_deselected(items: list[pytest.Item]) -> None:
    if any(_runs_the_operator(i) for i in items):
        _run["partial"] = True


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    in_operator_dirs = (TESTS.parent / report.nodeid.split("::")[0]).parent in OPERATOR_DIRS
    if in_operator_dirs and (report.failed or report.skipped):
        _run["partial"] = True


@pytest.fixture
def kubeconfig(kmock, tmp_path, monkeypatch):
    """Points the operator (Kopf's login and our client) at the `kmock` emulator; after the
    test, every API call the operator made in it must be in the record."""
    path = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url))
    monkeypatch.setenv("KUBECONFIG", str(path))
    # `kubernetes` read $KUBECONFIG into this default when it was first imported.
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("VLLM_SERVER_IMAGE_GPU", IMAGES.gpu)
    monkeypatch.setenv("VLLM_SERVER_IMAGE_CPU", IMAGES.cpu)
    monkeypatch.setenv("POD_NAMESPACE", "vllm-system")
    before = set(SEEN_CALLS)
    yield path
    missing = sorted(SEEN_CALLS - before - api_record.read(API_CALLS_FILE))
    if missing and not UPDATE:
        pytest.fail(f"API calls missing from {API_CALLS_FILE.name} (and the RBAC): {missing}")


@pytest.fixture(scope="session", autouse=True)
def operator_api_calls():  # the last fixture torn down, whichever tests ran
    """After the session: the record is exactly what a full run saw (see the module's doc)."""
    yield
    recorded, full = api_record.read(API_CALLS_FILE), not _run["partial"] and bool(SEEN_CALLS)
    new, failure = api_record.verdict(recorded, SEEN_CALLS, full=full, update=UPDATE)
    if new is not None:
        api_record.write(API_CALLS_FILE, new)
    if failure:
        pytest.fail(failure)
