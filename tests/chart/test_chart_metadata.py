"""The chart's metadata for its users and for Artifact Hub: Chart.yaml's fields and annotations
agree with what the chart ships (its CRDs, its images, examples the API server admits), and the
chart's README is generated from values.yaml, in sync, every value documented."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import yaml

from vllm_testkit.admission import admit
from vllm_testkit.chart import render

ROOT = Path(__file__).parents[2]
CHART = ROOT / "charts" / "vllm"
METADATA = yaml.safe_load((CHART / "Chart.yaml").read_text())
ANNOTATIONS = METADATA["annotations"]
# Artifact Hub's kinds of change (https://artifacthub.io/docs/topics/annotations/helm/).
CHANGE_KINDS = {"added", "changed", "deprecated", "removed", "fixed", "security"}


def chart_readme():
    spec = importlib.util.spec_from_file_location(
        "chart_readme", ROOT / "tools" / "chart_readme.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chart_yaml_has_what_a_catalog_shows():
    for field in ("description", "home", "icon", "kubeVersion", "sources", "maintainers"):
        assert METADATA.get(field), field
    assert METADATA["version"] == METADATA["appVersion"]
    pyproject = (ROOT / "pyproject.toml").read_text()
    license_ = re.search(r'^license = "([^"]+)"$', pyproject, re.MULTILINE)[1]
    assert ANNOTATIONS["artifacthub.io/license"] == license_
    assert ANNOTATIONS["artifacthub.io/operator"] == "true"


def test_the_crds_annotation_lists_the_crds_the_chart_ships():
    listed = {
        (c["kind"], c["version"], c["name"])
        for c in yaml.safe_load(ANNOTATIONS["artifacthub.io/crds"])
    }
    ours = set()
    for path in (CHART / "crds").glob("*.serving.vllm.ai.yaml"):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            ours.add((crd["spec"]["names"]["kind"], version["name"], crd["metadata"]["name"]))
    assert listed == ours
    for crd in yaml.safe_load(ANNOTATIONS["artifacthub.io/crds"]):
        assert crd["displayName"] and crd["description"]


def test_the_crd_examples_are_admitted():
    examples = yaml.safe_load(ANNOTATIONS["artifacthub.io/crdsExamples"])
    assert {e["kind"] for e in examples} == {"VLLMDeployment", "LoraAdapter"}
    for example in examples:
        example["metadata"]["namespace"] = "models"
        assert admit(example["kind"], example) == [], example["metadata"]["name"]


def rendered_images(values: dict[str, Any]) -> set[str]:
    images = set()
    for obj in render(values):
        spec = obj.get("spec") or {}
        pod = spec.get("template", {}).get("spec") if "template" in spec else spec
        for container in (pod or {}).get("containers") or ():
            images.add(container["image"])
        for env in (pod or {}).get("containers", [{}])[0].get("env") or ():
            if env["name"].startswith("VLLM_SERVER_IMAGE_"):
                images.add(env["value"])
    return images


def test_the_images_annotation_lists_every_image_the_chart_runs():
    listed = {i["image"] for i in yaml.safe_load(ANNOTATIONS["artifacthub.io/images"])}
    model = {"name": "tiny", "spec": {"model": {"uri": "/m"}, "accelerator": "CPU"}}
    assert rendered_images({"deployments": [model]}) == listed


def test_changes_use_artifact_hubs_kinds():
    changes = yaml.safe_load(ANNOTATIONS["artifacthub.io/changes"])
    assert changes and all(c["kind"] in CHANGE_KINDS and c["description"] for c in changes)


def test_the_chart_readme_is_generated_and_in_sync():
    module = chart_readme()
    assert (CHART / "README.md").read_text() == module.render(), (
        "charts/vllm/README.md is out of date: python tools/chart_readme.py"
    )


def leaves(values: Any, prefix: str = "") -> set[str]:
    if isinstance(values, dict) and values:
        return {leaf for k, v in values.items() for leaf in leaves(v, f"{prefix}{k}.")}
    return {prefix.rstrip(".")}


def test_every_value_is_documented():
    """Each value is a documented key, or inside one (a documented mapping, e.g. resources)."""
    module = chart_readme()
    text = (CHART / "values.yaml").read_text()
    documented = {key for key, _ in module.documented_keys(text)}
    for leaf in leaves(yaml.safe_load(text)):
        parts = leaf.split(".")
        ancestors = {".".join(parts[: i + 1]) for i in range(len(parts))}
        assert ancestors & documented, f"{leaf} has no `# --` comment"
