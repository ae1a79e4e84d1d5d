"""The Dockerfiles, checked statically (no Docker engine on these machines): pinned base images,
and every file they copy exists in the repository and is in the build context (.dockerignore)."""

from __future__ import annotations

import subprocess
from fnmatch import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
DOCKERFILES = sorted((ROOT / "images").glob("*/Dockerfile*"))


def instructions(path: Path) -> list[list[str]]:
    return [
        line.split() for line in path.read_text().splitlines() if line and not line.startswith("#")
    ]


def copy_sources(path: Path) -> list[str]:
    return [
        source
        for words in instructions(path)
        if words[0] == "COPY"
        for source in words[1:-1]
        if not source.startswith("--")
    ]


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether a pattern excludes `path` or a directory above it. fnmatch's `*` also crosses `/`,
    so this excludes at least what Docker would (for patterns without `!`)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    for pattern in patterns:
        pattern = pattern.strip("/")
        variants = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch(prefix, v) for prefix in prefixes for v in variants):
            return True
    return False


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
    for source in copy_sources(path):
        assert (ROOT / source).exists(), source


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_dockerignore_keeps_what_the_images_copy(path: Path):
    patterns = dockerignore()
    assert not any(p.startswith("!") for p in patterns)  # `ignored` does not handle exceptions
    for source in copy_sources(path):
        tracked = subprocess.run(
            ["git", "ls-files", "--", source], cwd=ROOT, capture_output=True, text=True
        ).stdout.split()
        for file in [source, *tracked]:
            assert not ignored(file, patterns), f"{path.name} copies {file}, .dockerignore drops it"


def test_dockerignore_drops_what_no_image_needs():
    patterns = dockerignore()
    for junk in (".venv/bin/python", ".git/HEAD", "operator/vllm_operator/__pycache__/x.pyc",
                 ".pytest_cache/v", ".ruff_cache/x", "server-ext/x.pyc"):  # fmt: skip
        assert ignored(junk, patterns), junk
    for needed in ("pyproject.toml", "README.md", "server-ext/vllm_server_ext/cli.py"):
        assert not ignored(needed, patterns), needed


def test_server_images_are_built_on_the_supported_vllm():
    from vllm_server_ext import SUPPORTED_VLLM

    for name in ("Dockerfile", "Dockerfile.cpu"):
        (base,) = [w[1] for w in instructions(ROOT / "images/server" / name) if w[0] == "FROM"]
        assert base.endswith(f":v{SUPPORTED_VLLM}.0"), base


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cpu"])
def test_server_images_run_as_the_user_the_operator_runs_pods_as(name: str):
    """Pods run as SERVER_UID with a read-only root filesystem and $HOME on a volume: the image's
    own user is that one, with that home (an image run by Docker alone works the same way)."""
    from vllm_operator.model.builders import HOME_MOUNT
    from vllm_operator.model.spec import SERVER_UID

    words = instructions(ROOT / "images/server" / name)
    (user,) = [w[1] for w in words if w[0] == "USER"]
    assert user == f"{SERVER_UID}:{SERVER_UID}"
    assert words[-1] == ["ENTRYPOINT", '["vllm-ext-serve"]']
    assert words.index(["USER", user]) > max(i for i, w in enumerate(words) if w[0] == "RUN")
    text = (ROOT / "images/server" / name).read_text()
    assert f"--uid {SERVER_UID} --gid {SERVER_UID} --home-dir {HOME_MOUNT}" in text
    assert ["ENV", f"HOME={HOME_MOUNT}"] in words
