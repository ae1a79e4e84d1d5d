"""What these machines cannot run of the kind e2e suite, checked statically: the kind config,
the workflows, and the commands the suite would run (a dry run with stub tools)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vllm_testkit import kind_cluster as e2e

ROOT = Path(__file__).parents[2]

WORKFLOWS = sorted((ROOT / ".github/workflows").glob("*.yml"))
# No GitHub workflow JSON schema is available offline: the structure it would check, by hand.
WORKFLOW_KEYS = {"name", "run-name", "on", "permissions", "env", "defaults", "concurrency", "jobs"}
JOB_KEYS = {"name", "runs-on", "timeout-minutes", "steps", "needs", "if", "env", "strategy",
            "permissions", "defaults", "services", "container", "continue-on-error"}  # fmt: skip
STEP_KEYS = {"name", "id", "if", "uses", "run", "with", "env", "shell", "working-directory",
             "continue-on-error", "timeout-minutes"}  # fmt: skip
EVENTS = {"push", "pull_request", "workflow_dispatch", "schedule", "release"}
PINNED = re.compile(r"[\w.-]+/[\w./-]+@(v\d+(\.\d+)*|[0-9a-f]{40})")  # a version tag or a SHA


def test_kind_config_mounts_the_models_into_the_node():
    config = yaml.safe_load((ROOT / "tests/e2e/kind-config.yaml").read_text())
    assert config["kind"] == "Cluster"
    (node,) = config["nodes"]
    assert node["image"].startswith("kindest/node:v1.")
    (mount,) = node["extraMounts"]
    assert mount == {"hostPath": "${E2E_MODELS}", "containerPath": "/models", "readOnly": True}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflows_are_well_formed(path: Path):
    flow = yaml.safe_load(path.read_text())
    flow["on"] = flow.pop(True)  # PyYAML reads the key `on` as True
    assert set(flow) <= WORKFLOW_KEYS and {"name", "on", "jobs"} <= set(flow), set(flow)
    assert set(flow["on"]) <= EVENTS, flow["on"]
    assert flow["jobs"]
    for name, job in flow["jobs"].items():
        assert set(job) <= JOB_KEYS, (name, set(job))
        assert isinstance(job["runs-on"], str) and job["runs-on"], name
        assert isinstance(job.get("timeout-minutes", 1), int), name
        assert isinstance(job["steps"], list) and job["steps"], name
        for step in job["steps"]:
            assert set(step) <= STEP_KEYS, step
            assert len({"uses", "run"} & set(step)) == 1, step  # exactly one of them
            if "uses" in step:
                assert PINNED.fullmatch(step["uses"]), step["uses"]
            else:
                assert isinstance(step["run"], str) and step["run"].strip(), step


def test_workflows_run_the_readme_commands():
    ci = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    e2e_flow = yaml.safe_load((ROOT / ".github/workflows/e2e.yml").read_text())
    for flow, command in ((ci, "make test"), (e2e_flow, "make e2e")):
        (job,) = flow["jobs"].values()
        runs = [s.get("run", "") for s in job["steps"]]
        assert any(r.startswith(command) for r in runs), runs
    uses = [s.get("uses", "") for s in e2e_flow["jobs"]["kind"]["steps"]]
    assert any(u.startswith("helm/kind-action@") for u in uses)
    assert any(u.startswith("azure/setup-helm@") for u in uses)


def test_the_default_test_run_leaves_the_e2e_suite_out(pytestconfig):
    addopts = pytestconfig.getini("addopts")
    assert addopts[addopts.index("-m") + 1] == "not e2e"  # GitHub's runners have the tools
    makefile = (ROOT / "Makefile").read_text()
    (recipe,) = re.findall(r"^e2e:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    (pytest_line,) = [line for line in recipe.splitlines() if "pytest" in line]
    assert "-m e2e" in pytest_line and " -s" in pytest_line, pytest_line  # a later -m wins


def test_the_suite_and_these_checks_see_the_same_checkout():
    assert e2e.ROOT == ROOT  # else the path checks below would check nothing


def test_the_suite_commands_use_files_that_exist(tmp_path):
    commands = e2e.build_commands(tmp_path / "models") + e2e.install_commands(tmp_path)
    for command in commands:
        for word in command:
            if word.startswith(str(ROOT)):
                assert Path(word).exists(), word
    assert "e2e:" in (ROOT / "Makefile").read_text()


def test_the_suite_skips_with_one_reason_where_tools_are_missing(monkeypatch):
    monkeypatch.setattr(e2e.shutil, "which", lambda tool: None if tool == "kind" else "/bin/x")
    assert e2e.missing_tools() == "the e2e suite needs kind (docker, kind, helm and kubectl)"


def run_suite_without_tools(tmp_path, **env) -> subprocess.CompletedProcess:
    """The e2e suite as `make e2e` runs it, on a PATH without docker, kind, helm or kubectl."""
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "e2e", "tests/e2e", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT, env={**os.environ, "PATH": str(empty), **env},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_without_its_tools_the_suite_skips_unless_it_is_required(tmp_path):
    skipped = run_suite_without_tools(tmp_path)
    assert skipped.returncode == 0, skipped.stdout[-2000:]
    assert " skipped" in skipped.stdout and "the e2e suite needs" in skipped.stdout
    required = run_suite_without_tools(tmp_path, E2E_REQUIRED="1")
    assert required.returncode != 0, required.stdout[-2000:]
    assert "E2E_REQUIRED=1: the e2e suite needs" in required.stdout


def test_the_e2e_workflow_requires_the_suite_to_run():
    (job,) = yaml.safe_load((ROOT / ".github/workflows/e2e.yml").read_text())["jobs"].values()
    (step,) = [s for s in job["steps"] if "make e2e" in s.get("run", "")]
    assert step["env"]["E2E_REQUIRED"] == "1"


def test_chart_values_of_the_suite_are_accepted_by_the_chart():
    from helm_python import Chart

    files = Chart.load(ROOT / "charts/vllm").render(e2e.chart_values(), name="vllm", namespace="x")
    assert any("kind: VLLMDeployment" in text for text in files.values())


# Each stub tool appends its name and arguments, tab-separated, to $E2E_DRY_RUN_LOG.
STUB = """#!/bin/sh
{ printf '%s' "${0##*/}"; for a in "$@"; do printf '\\t%s' "$a"; done; echo; } >> "$E2E_DRY_RUN_LOG"
"""


def test_a_dry_run_loads_the_images_the_chart_uses_and_mounts_the_models(tmp_path, monkeypatch):
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for tool in e2e.TOOLS:
        (stubs / tool).write_text(STUB)
        (stubs / tool).chmod(0o755)
    log = tmp_path / "calls.log"
    monkeypatch.setenv("E2E_DRY_RUN_LOG", str(log))
    monkeypatch.setenv("PATH", f"{stubs}{os.pathsep}{os.environ['PATH']}")
    assert e2e.missing_tools() is None
    models = tmp_path / "work" / "models"
    models.mkdir(parents=True)

    e2e.set_up(models)

    calls = [line.split("\t") for line in log.read_text().splitlines()]
    assert calls[0] == ["docker", "info"]
    built = [c[c.index("-t") + 1] for c in calls if c[:2] == ["docker", "build"]]
    loaded = [c[3] for c in calls if c[:3] == ["kind", "load", "docker-image"]]
    (create,) = [c for c in calls if c[:3] == ["kind", "create", "cluster"]]
    (install,) = [c for c in calls if c[:2] == ["helm", "--kube-context"] and "install" in c]
    assert calls.index(create) < min(calls.index(c) for c in calls if c[1] == "load")
    assert calls[-1] == install  # the chart last, into a cluster that has the images
    for call in calls[1:]:  # never another cluster than the suite's own
        if call[0] == "docker":
            continue
        assert {"--name", "--context", "--kube-context"} & set(call), call
        for flag, value in (("--name", e2e.CLUSTER), ("--context", e2e.CONTEXT),
                            ("--kube-context", e2e.CONTEXT)):  # fmt: skip
            if flag in call:
                assert call[call.index(flag) + 1] == value, call

    # The images kind loads are the ones the chart values point at.
    values = json.loads(Path(install[install.index("-f") + 1]).read_text())
    image = values["operator"]["image"]
    assert image["pullPolicy"] == "Never"  # only the loaded image, never a registry's
    assert sorted(loaded) == sorted(built)
    assert set(loaded) == {f"{image['repository']}:{image['tag']}", values["serverImages"]["cpu"]}
    (deployment,) = values["deployments"]
    spec = deployment["spec"]
    assert spec["accelerator"] == "CPU" and "image" not in spec  # so serverImages.cpu is used
    assert spec["imagePullPolicy"] == "Never"

    # The node mounts the generated models where the volume, the model URI and the adapters'
    # allowed roots expect them.
    config = yaml.safe_load(Path(create[create.index("--config") + 1]).read_text())
    (node,) = config["nodes"]
    (mount,) = node["extraMounts"]
    assert mount["hostPath"] == str(models)
    (applied,) = [c for c in calls if "apply" in c]
    volume, claim = yaml.safe_load_all(Path(applied[applied.index("-f") + 1]).read_text())
    assert volume["spec"]["hostPath"]["path"] == mount["containerPath"]
    assert claim["spec"]["volumeName"] == volume["metadata"]["name"]
    uri = spec["model"]["uri"]
    assert uri.startswith(f"pvc://{claim['metadata']['name']}/")

    from vllm_operator.model.builders import MODEL_MOUNT  # where pods mount a pvc:// model's claim

    # Adapter sources (/models/sql in the suite) are paths in the pods, under the claim's mount.
    assert spec["lora"]["allowedSourceRoots"] == [MODEL_MOUNT] == [mount["containerPath"]]
