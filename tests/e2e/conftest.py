"""Fixtures of the kind e2e suite: the cluster, created once per session and always deleted
(E2E_KEEP_CLUSTER=1 keeps it); every test is skipped with one reason where the tools are
missing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from kind_cluster import (
    CLUSTER,
    CONTEXT,
    MODELS_VOLUME,
    NAMESPACE,
    ROOT,
    build_commands,
    chart_values,
    kubectl,
    missing_tools,
    run,
)


def pytest_collection_modifyitems(config, items):
    e2e = [i for i in items if i.get_closest_marker("e2e")]
    if e2e and (reason := missing_tools()):
        for item in e2e:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> Path:
    from vllm_server_ext.tiny_model import generate_lora, generate_model

    root = tmp_path_factory.mktemp("e2e") / "models"
    model = generate_model(root / "tiny-llama")
    generate_lora(root / "sql", base_model=model, rank=8)
    return root


@pytest.fixture(scope="session")
def cluster(models: Path):
    if reason := missing_tools():
        pytest.skip(reason)
    kind_config = (Path(__file__).parent / "kind-config.yaml").read_text()
    (models.parent / "kind.yaml").write_text(kind_config.replace("${E2E_MODELS}", str(models)))
    values = models.parent / "values.json"
    values.write_text(json.dumps(chart_values()))
    run("kind", "delete", "cluster", "--name", CLUSTER, check=False)
    try:
        for command in build_commands(models):
            run(*command, timeout=3600)
        run("kubectl", "--context", CONTEXT, "create", "namespace", NAMESPACE)
        models_volume = models.parent / "models.yaml"
        models_volume.write_text(MODELS_VOLUME)
        kubectl("apply", "-f", str(models_volume))
        run("helm", "--kube-context", CONTEXT, "install", "vllm", str(ROOT / "charts/vllm"),
            "-n", NAMESPACE, "-f", str(values), "--wait", "--timeout", "10m")  # fmt: skip
        yield
    finally:
        if not os.environ.get("E2E_KEEP_CLUSTER"):
            run("kind", "delete", "cluster", "--name", CLUSTER, check=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed and item.get_closest_marker("e2e"):
        for args in (
            ("logs", "deployment/vllm", "--tail", "200"),
            ("get", "events", "--sort-by", ".lastTimestamp"),
            ("get", "vllmd,lora", "-o", "yaml"),
        ):
            report.sections.append((f"kubectl {' '.join(args)}", kubectl(*args, check=False)))
    return report
