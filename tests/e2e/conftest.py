"""Fixtures of the kind e2e suite: the cluster, created once per session and always deleted
(E2E_KEEP_CLUSTER=1 keeps it). Where the tools are missing every test is skipped with one
reason, unless E2E_REQUIRED=1 (the e2e workflow sets it): then every test fails with it, so a
run that could test nothing is never green. A failed setup or test dumps the operator's and the
servers' logs, events, the custom resources and the pods."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vllm_testkit.kind_cluster import CLUSTER, diagnostics, missing_tools, run, say, set_up


def required() -> bool:
    return os.environ.get("E2E_REQUIRED") == "1"


def pytest_collection_modifyitems(config, items):
    e2e = [i for i in items if i.get_closest_marker("e2e")]
    if e2e and not required() and (reason := missing_tools()):
        for item in e2e:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> Path:
    from vllm_testkit.tiny_model import generate_lora, generate_model

    root = tmp_path_factory.mktemp("e2e") / "models"
    model = generate_model(root / "tiny-llama")
    generate_lora(root / "sql", base_model=model, rank=8)
    return root


@pytest.fixture(scope="session")
def cluster(models: Path):
    if reason := missing_tools():
        if required():
            pytest.fail(f"E2E_REQUIRED=1: {reason}", pytrace=False)
        pytest.skip(reason)
    run("kind", "delete", "cluster", "--name", CLUSTER, check=False)
    try:
        try:
            set_up(models)
        except BaseException:
            # Before the teardown below deletes the cluster, or nothing is left to look at.
            for title, output in diagnostics():
                say(f"----- {title}\n{output}")
            raise
        yield
    finally:
        if not os.environ.get("E2E_KEEP_CLUSTER"):
            run("kind", "delete", "cluster", "--name", CLUSTER, check=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed and item.get_closest_marker("e2e"):
        report.sections.extend(diagnostics())
    return report
