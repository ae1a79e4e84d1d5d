"""The Dockerfiles, checked statically (no Docker engine on these machines): pinned base images,
and every file they copy exists in the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
DOCKERFILES = sorted((ROOT / "images").glob("*/Dockerfile*"))


def instructions(path: Path) -> list[list[str]]:
    return [
        line.split() for line in path.read_text().splitlines() if line and not line.startswith("#")
    ]


def test_there_is_an_operator_image_and_gpu_and_cpu_server_images():
    assert {p.relative_to(ROOT).as_posix() for p in DOCKERFILES} == {
        "images/operator/Dockerfile",
        "images/server/Dockerfile",
        "images/server/Dockerfile.cpu",
    }


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_base_images_are_pinned_and_copies_exist(path: Path):
    for words in instructions(path):
        if words[0] == "FROM":
            image = words[1]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image
        if words[0] == "COPY":
            for source in words[1:-1]:
                assert (ROOT / source).exists(), source


def test_server_images_are_built_on_the_supported_vllm():
    from vllm_server_ext import SUPPORTED_VLLM

    for name in ("Dockerfile", "Dockerfile.cpu"):
        (base,) = [w[1] for w in instructions(ROOT / "images/server" / name) if w[0] == "FROM"]
        assert base.endswith(f":v{SUPPORTED_VLLM}.0"), base
