"""What these machines cannot run of the kind e2e suite, checked statically: the kind config,
the workflows, and the commands the suite would run."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
import kind_cluster as e2e  # noqa: E402  (tests/e2e/kind_cluster.py)


def test_kind_config_mounts_the_models_into_the_node():
    config = yaml.safe_load((ROOT / "tests/e2e/kind-config.yaml").read_text())
    assert config["kind"] == "Cluster"
    (node,) = config["nodes"]
    assert node["image"].startswith("kindest/node:v1.")
    (mount,) = node["extraMounts"]
    assert mount == {"hostPath": "${E2E_MODELS}", "containerPath": "/models", "readOnly": True}


def test_workflows_run_the_readme_commands():
    ci = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    e2e_flow = yaml.safe_load((ROOT / ".github/workflows/e2e.yml").read_text())
    for flow, command in ((ci, "make test"), (e2e_flow, "make e2e")):
        assert set(flow) >= {"name", True, "jobs"}  # PyYAML reads the key `on` as True
        (job,) = flow["jobs"].values()
        runs = [s.get("run", "") for s in job["steps"]]
        assert any(r.startswith(command) for r in runs), runs
        assert all("@" in s["uses"] for s in job["steps"] if "uses" in s)  # pinned actions
    uses = [s.get("uses", "") for s in e2e_flow["jobs"]["kind"]["steps"]]
    assert any(u.startswith("helm/kind-action@") for u in uses)
    assert any(u.startswith("azure/setup-helm@") for u in uses)


def test_the_suite_commands_use_files_that_exist(tmp_path):
    for command in e2e.build_commands(tmp_path / "models"):
        for word in command:
            if word.startswith(str(ROOT)):
                assert Path(word).exists(), word
    assert "e2e:" in (ROOT / "Makefile").read_text()


def test_the_suite_skips_with_one_reason_where_tools_are_missing(monkeypatch):
    monkeypatch.setattr(e2e.shutil, "which", lambda tool: None if tool == "kind" else "/bin/x")
    assert e2e.missing_tools() == "the e2e suite needs kind (docker, kind, helm and kubectl)"


def test_chart_values_of_the_suite_are_accepted_by_the_chart():
    from helm_python import Chart

    files = Chart.load(ROOT / "charts/vllm").render(e2e.chart_values(), name="vllm", namespace="x")
    assert any("kind: VLLMDeployment" in text for text in files.values())
