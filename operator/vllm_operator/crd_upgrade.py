"""`python -m vllm_operator.crd_upgrade --chart-version V FILE...`: bring this project's CRDs up
to date. The chart runs it as a pre-install/pre-upgrade hook on the files of its `crds/`, since
Helm installs those on first install only and never upgrades them.

Each CRD is server-side applied under the field manager `vllm-chart` (forcing, so it takes over
the fields Helm's first install or a hand-run `kubectl apply` wrote), with the chart's version
in an annotation. Run it as often as you like:
- it never deletes anything: no CRD, no version of one, no custom resource;
- it leaves alone a CRD that a newer chart wrote (two releases of different versions in one
  cluster: the newer CRDs stay, the older release's operator ignores fields it does not know);
- it applies this project's CRDs (group serving.vllm.ai) and nothing else.

One JSON line per CRD on stdout; on a refusal the API server's message, and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from . import GROUP
from .clients.kube import ApiError, Kube

FIELD_MANAGER = "vllm-chart"
VERSION_ANNOTATION = f"{GROUP}/chart-version"
_SEMVER = re.compile(
    r"^v?(?P<core>\d+\.\d+\.\d+)(?:-(?P<pre>[0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$"
)


def semver_key(version: str) -> tuple[Any, ...] | None:
    """A key that orders versions as Semantic Versioning 2.0 does (a pre-release before its
    release; build metadata ignored); None for a string that is no such version."""
    match = _SEMVER.fullmatch(version.strip())
    if match is None:
        return None
    core = tuple(int(part) for part in match["core"].split("."))
    if match["pre"] is None:
        return (core, 1, ())
    # Numeric identifiers sort numerically and before alphanumeric ones.
    pre = tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in match["pre"].split(".")
    )
    return (core, 0, pre)


def newer(cluster: str | None, ours: str) -> bool:
    """Whether a CRD marked with chart version `cluster` is newer than `ours`."""
    if cluster is None:
        return False
    theirs, mine = semver_key(cluster), semver_key(ours)
    return theirs is not None and mine is not None and theirs > mine


def load(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """The CRDs of `paths`; a ValueError names a file that holds anything else."""
    crds = []
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            group = (doc.get("spec") or {}).get("group")
            if doc.get("kind") != "CustomResourceDefinition" or group != GROUP:
                raise ValueError(
                    f"{path}: holds a {doc.get('kind')} of group {group!r}; only {GROUP} CRDs "
                    "are applied"
                )
            crds.append(doc)
    return crds


async def upgrade(kube: Kube, crds: Sequence[dict[str, Any]], version: str) -> list[dict]:
    """Apply each CRD unless the cluster's copy is newer; one record per CRD."""
    records = []
    for crd in crds:
        name = crd["metadata"]["name"]
        current = await kube.get_or_none("CustomResourceDefinition", "", name)
        meta = (current or {}).get("metadata") or {}
        theirs = (meta.get("annotations") or {}).get(VERSION_ANNOTATION)
        if meta.get("deletionTimestamp"):
            raise ApiError(409, f"{name} is being deleted; wait until it is gone, then retry")
        if newer(theirs, version):
            records.append({"crd": name, "action": "kept", "cluster": theirs, "chart": version})
            continue
        desired = {
            **crd,
            "metadata": {
                **crd["metadata"],
                "annotations": {
                    **(crd["metadata"].get("annotations") or {}),
                    VERSION_ANNOTATION: version,
                },
            },
        }
        await kube.apply(desired, manager=FIELD_MANAGER)
        action = "created" if current is None else "updated"
        records.append({"crd": name, "action": action, "cluster": theirs, "chart": version})
    return records


async def _main(args: argparse.Namespace) -> int:
    try:
        crds = load(args.files)
    except (OSError, ValueError, yaml.YAMLError) as e:
        print(json.dumps({"error": str(e)}), file=sys.stderr)
        return 2
    kube = Kube.connect()
    try:
        for record in await upgrade(kube, crds, args.chart_version):
            print(json.dumps(record), flush=True)
    except ApiError as e:
        print(json.dumps({"error": f"the API server refused: {e}"}), file=sys.stderr)
        return 1
    finally:
        await kube.close()
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m vllm_operator.crd_upgrade",
        description="Server-side apply this project's CRDs, never downgrading or deleting.",
    )
    parser.add_argument("--chart-version", required=True, help="the chart's version (semver)")
    parser.add_argument("files", nargs="+", type=Path, help="CRD manifests (YAML)")
    args = parser.parse_args(argv)
    if semver_key(args.chart_version) is None:
        parser.error(f"--chart-version {args.chart_version!r} is not a semantic version")
    sys.exit(asyncio.run(_main(args)))


if __name__ == "__main__":
    main()
