"""checkov (https://www.checkov.io, its Kubernetes checks) on what this project puts in a cluster:
the chart rendered by real Helm with models, adapters and a highly available operator, and the
operator's objects for the sample VLLMDeployments and more shapes of spec. No failed check but
those of tests/static/checkov-allowlist.yaml, each with why; one checkov run over a directory (a
few seconds).

checkov runs from .venv-checkov (`make checkov`, which `make test` runs): its dependencies clash
with vLLM's in .venv (tests/static/checkov-requirements.txt). Without it the tests here are
skipped, saying so. CHECKOV=/path/to/checkov runs another."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_python import Chart

from vllm_operator.model.builders import build_all
from vllm_operator.model.spec import parse_deployment
from vllm_testkit.samples import GOOD, IMAGES, vllmd
from vllm_testkit.tiny_model import CPU_ENGINE

ROOT = Path(__file__).parents[2]
CHART = ROOT / "charts" / "vllm"
ALLOWLIST = Path(__file__).with_name("checkov-allowlist.yaml")
CHECKOV = Path(os.environ.get("CHECKOV") or ROOT / ".venv-checkov" / "bin" / "checkov")
RELEASE, NAMESPACE, MODELS = "vllm", "vllm-system", "models"

pytestmark = pytest.mark.skipif(
    not CHECKOV.exists(),
    reason=f"checkov is not installed at {CHECKOV}: `make checkov` installs it into .venv-checkov",
)

CHART_VALUES = {
    "operator": {"replicas": 2},
    "deployments": [
        {
            "name": "tiny",
            "spec": {
                "model": {"uri": "pvc://models/tiny-llama"},
                "accelerator": "CPU",
                "engine": CPU_ENGINE,
                "lora": {"enabled": True, "allowedSourceRoots": ["/models"]},
            },
        },
        {
            "name": "llama",
            "spec": {
                "model": {"uri": "hf://meta-llama/Llama-3.2-1B-Instruct"},
                "apiKeySecret": {"name": "llama-api"},
                "hfTokenSecret": {"name": "hf"},
            },
        },
    ],
    "adapters": [{"name": "sql", "spec": {"deploymentRef": {"name": "tiny"},
                                          "source": {"uri": "/models/sql"}}}],
    "networkPolicy": {"from": [{"namespaceSelector": {"matchLabels": {"gateway": "true"}}}]},
}  # fmt: skip
MODEL_SPECS = {
    **{name: body["spec"] for name, body in GOOD.items()},
    "extra-volumes": {
        "model": {"uri": "/models/llama"},
        "volumes": [{"name": "weights", "persistentVolumeClaim": {"claimName": "weights"}}],
        "volumeMounts": [{"name": "weights", "mountPath": "/models", "readOnly": True}],
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                       "whenUnsatisfiable": "ScheduleAnyway"}],
    },
    "cpu-cache": {"model": {"uri": "hf://org/m"}, "accelerator": "CPU",
                  "modelCache": {"enabled": True}, "replicas": 2},
}  # fmt: skip


def chart_objects() -> list[dict[str, Any]]:
    files = Chart.load(CHART).render(CHART_VALUES, name=RELEASE, namespace=NAMESPACE)
    return [
        doc
        for path, text in sorted(files.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def model_objects(name: str) -> list[dict[str, Any]]:
    spec = parse_deployment(vllmd(name, MODEL_SPECS[name], namespace=MODELS), IMAGES)
    return build_all(spec, monitoring_available=True, operator_namespace=NAMESPACE)


def allowlist() -> list[dict[str, Any]]:
    return yaml.safe_load(ALLOWLIST.read_text())


def allowed_by(failure: dict[str, Any]) -> list[int]:
    """The allowlist entries (their indexes) that accept a failed check."""
    return [
        i
        for i, entry in enumerate(allowlist())
        if entry["check"] == failure["check_id"]
        and any(fnmatch.fnmatchcase(failure["resource"], p) for p in entry["resources"])
    ]


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> dict[str, Any]:
    """checkov's JSON report on the chart and the operator's objects, and what was scanned."""
    out = tmp_path_factory.mktemp("checkov")
    scanned = {"chart.yaml": chart_objects()}
    scanned |= {f"model-{name}.yaml": model_objects(name) for name in sorted(MODEL_SPECS)}
    for file, objects in scanned.items():
        (out / file).write_text(yaml.safe_dump_all(objects, sort_keys=False))
    done = subprocess.run(
        [str(CHECKOV), "--directory", str(out), "--framework", "kubernetes", "--output", "json",
         "--skip-download"],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "LOG_LEVEL": "WARNING"},
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr[-3000:]  # 1: some check failed
    (report,) = [r for r in _reports(json.loads(done.stdout)) if r["check_type"] == "kubernetes"]
    return {"report": report, "scanned": scanned}


def _reports(parsed: Any) -> list[dict[str, Any]]:
    return parsed if isinstance(parsed, list) else [parsed]


def failures(scan: dict[str, Any]) -> list[dict[str, Any]]:
    return scan["report"]["results"]["failed_checks"]


def test_checkov_scanned_every_pod_of_the_chart_and_the_operator(scan):
    summary = scan["report"]["summary"]
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 300  # it did check them (about 20 checks per workload)
    checked = {c["resource"] for c in scan["report"]["results"]["passed_checks"]}
    for objects in scan["scanned"].values():
        for obj in objects:
            if obj["kind"] in ("Deployment", "Job", "Pod"):
                meta = obj["metadata"]
                assert f"{obj['kind']}.{meta['namespace']}.{meta['name']}" in checked


def test_no_check_fails_but_the_allowlisted_ones(scan):
    unexpected = sorted(
        f"{f['check_id']} {f['resource']}: {f['check_name']}"
        for f in failures(scan)
        if not allowed_by(f)
    )
    assert unexpected == []


def test_every_allowlist_entry_is_needed_and_says_why(scan):
    used = {i for f in failures(scan) for i in allowed_by(f)}
    entries = allowlist()
    assert [e["check"] for i, e in enumerate(entries) if i not in used] == []
    for entry in entries:
        assert re.fullmatch(r"CKV2?_K8S_\d+", entry["check"]), entry
        assert entry["resources"] and all(isinstance(p, str) for p in entry["resources"]), entry
        assert len(entry["why"].split()) >= 8, entry  # a reason, not a word
