"""The Helm chart rendered by real Helm (helm-python-sdk bundles Helm's Go SDK), as objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "vllm"


def render(
    values: dict[str, Any] | None = None,
    *,
    chart: Path = CHART,
    name: str = "vllm",
    namespace: str = "vllm-system",
) -> list[dict[str, Any]]:
    """Every object `helm template` would print for `values` (NOTES.txt left out)."""
    from helm_python import Chart

    files = Chart.load(str(chart)).render(values or {}, name=name, namespace=namespace)
    texts = [text for path, text in sorted(files.items()) if not path.endswith("NOTES.txt")]
    return [obj for text in texts for obj in yaml.safe_load_all(text) if obj]
