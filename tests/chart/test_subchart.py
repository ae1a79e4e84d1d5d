"""The chart as a dependency of an umbrella chart (real Helm, through helm-python-sdk): Helm
passes `global` to every subchart, and the values schema must take it; `global.imageRegistry`
and `global.imagePullSecrets` reach every image and pod of the chart."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from vllm_testkit.chart import CHART, render

GLOBAL = {
    "imageRegistry": "mirror.example.com",
    "imagePullSecrets": ["mirror", {"name": "team"}],
    "storageClass": "fast",  # another chart's global: not ours to refuse
}
MODEL = {
    "name": "tiny",
    "spec": {
        "model": {"uri": "/models/tiny"},
        "accelerator": "CPU",
        "imagePullSecrets": [{"name": "own"}],
    },
}


def umbrella(tmp_path: Path) -> Path:
    """A platform's umbrella chart with this chart vendored as a dependency."""
    root = tmp_path / "platform"
    (root / "charts").mkdir(parents=True)
    (root / "Chart.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "platform",
                "version": "1.0.0",
                "dependencies": [{"name": "vllm", "version": "0.1.0"}],
            }
        )
    )
    shutil.copytree(CHART, root / "charts" / "vllm")
    return root


def pods(objects: list[dict]) -> list[dict]:
    found = []
    for obj in objects:
        spec = obj.get("spec") or {}
        if obj["kind"] == "Pod":
            found.append(spec)
        elif obj["kind"] in ("Deployment", "Job"):
            found.append(spec["template"]["spec"])
    return found


def test_the_chart_renders_as_a_subchart_with_global_values(tmp_path: Path):
    values = {
        "global": GLOBAL,
        "vllm": {"operator": {"imagePullSecrets": ["registry"]}, "deployments": [MODEL]},
    }
    objects = render(values, chart=umbrella(tmp_path), namespace="ml")
    assert {o["kind"] for o in objects} >= {"Deployment", "Job", "Pod", "VLLMDeployment"}

    for pod in pods(objects):
        for container in pod["containers"]:
            assert container["image"].startswith("mirror.example.com/"), container["image"]
        secrets = [s["name"] for s in pod["imagePullSecrets"]]
        assert secrets == ["mirror", "team", "registry"]
    (operator,) = [o for o in objects if o["kind"] == "Deployment"]
    env = {
        e["name"]: e.get("value")
        for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["VLLM_SERVER_IMAGE_GPU"] == "mirror.example.com/vllm-k8s/vllm-server:0.1.0"
    assert env["VLLM_SERVER_IMAGE_CPU"] == "mirror.example.com/vllm-k8s/vllm-server:0.1.0-cpu"
    (model,) = [o for o in objects if o["kind"] == "VLLMDeployment"]
    assert model["spec"]["imagePullSecrets"] == [{"name": n} for n in ("mirror", "team", "own")]


def test_without_global_values_images_are_as_named(tmp_path: Path):
    objects = render({}, chart=umbrella(tmp_path), namespace="ml")
    (operator,) = [o for o in objects if o["kind"] == "Deployment"]
    pod = operator["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "ghcr.io/vllm-k8s/vllm-operator:0.1.0"
    assert "imagePullSecrets" not in pod
