"""`--lora-allowed-roots`: the pure check the server runs before every runtime LoRA load (the real
server's answers are in test_lora_hardening_vllm), and the flag."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vllm_server_ext.cli import parse_command_line
from vllm_server_ext.lora_checks import is_hub_id, lora_load_error, lora_source_error


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An allowed root with an adapter directory in it, a file outside, and links out."""
    root = tmp_path / "root"
    (root / "adapter").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "escape").symlink_to(tmp_path / "outside", target_is_directory=True)
    (root / "adapter" / "up").symlink_to(tmp_path, target_is_directory=True)
    (root / "inner").symlink_to(root / "adapter", target_is_directory=True)
    return root


@pytest.mark.parametrize("source", ["{root}/adapter", "{root}", "{root}/adapter/", "{root}/inner",
                                    "{root}/adapter/../adapter", "{root}/not-there-yet"])  # fmt: skip
def test_real_paths_inside_a_root_pass(root: Path, source: str):
    assert lora_source_error("a", source.format(root=root), [str(root)]) is None


@pytest.mark.parametrize(
    "source",
    [
        "{root}/escape",  # a symlink out
        "{root}/escape/adapter",
        "{root}/adapter/up/outside",  # a symlink further down
        "{root}/../outside",  # `..`
        "{root}/adapter/../../outside",
        "{root}x",  # a sibling whose name starts like the root
        "/etc",
        "/",
    ],
)
def test_real_paths_outside_every_root_are_refused_naming_the_roots(root: Path, source: str):
    path = source.format(root=root)
    error = lora_source_error("a", path, [str(root), "/nonexistent/other"])
    assert error is not None
    assert f"'{path}'" in error
    assert f"outside the allowed roots {root}, /nonexistent/other (symlinks resolved" in error


def test_where_a_symlink_leads_is_not_told(root: Path):
    error = lora_source_error("a", f"{root}/escape", [str(root)])
    assert error is not None
    assert "outside" not in error.replace("outside the allowed roots", "")


def test_a_root_that_is_a_symlink_counts_by_its_real_path(root: Path, tmp_path: Path):
    (tmp_path / "root-link").symlink_to(root, target_is_directory=True)
    assert lora_source_error("a", f"{root}/adapter", [str(tmp_path / "root-link")]) is None
    assert lora_source_error("a", f"{tmp_path}/root-link/adapter", [str(root)]) is None


def test_the_filesystem_root_allows_every_absolute_path(root: Path):
    assert lora_source_error("a", f"{root}/escape", ["/"]) is None


@pytest.mark.parametrize("hub_id", ["org/name", "Org-1/name_2.v3", "a/b", "meta-llama/Llama-3.1"])
def test_hub_ids_pass(root: Path, hub_id: str):
    assert is_hub_id(hub_id)
    assert lora_source_error("a", hub_id, [str(root)]) is None


@pytest.mark.parametrize(
    "source",
    ["a/b/c", "../x", "x/..", "./x", "x/.", "..", "org", "", "hf://org/name", "~/x", "~root/x",
     "org/na me", "org/name\n", "org/na:me", "org\\name", "org//name", "/org/name"[1:] + "/"],
)  # fmt: skip
def test_other_relative_sources_are_refused(root: Path, source: str):
    assert not is_hub_id(source)
    error = lora_source_error("a", source, [str(root)])
    assert error == (
        f"LoRA adapter 'a': source '{source}' is neither an absolute path nor a hub id ORG/NAME"
    )


def test_a_hub_id_that_exists_on_disk_is_checked_as_the_path_vllm_loads(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """vLLM loads a relative path that exists from the working directory, not from the hub."""
    (tmp_path / "outside" / "adapter").mkdir()
    monkeypatch.chdir(tmp_path)
    error = lora_source_error("a", "outside/adapter", [str(root)])
    assert error is not None and "outside the allowed roots" in error
    monkeypatch.chdir(root.parent.parent)
    assert lora_source_error("a", f"{tmp_path.name}/root", [str(root)]) is None


def test_without_roots_the_source_is_not_checked(root: Path, tiny_lora: Path, tiny_lora_r16: Path):
    assert lora_load_error("a", "a/b/c", 8, None) is None
    assert lora_load_error("a", f"{root}/escape", 8, []) is None
    assert lora_load_error("a", str(tiny_lora), 8, None) is None
    assert "rank 16" in (lora_load_error("a", str(tiny_lora_r16), 8, None) or "")


def test_the_source_is_checked_before_anything_is_read(tmp_path: Path, tiny_lora_r16: Path):
    error = lora_load_error("a", str(tiny_lora_r16), 8, [str(tmp_path)])
    assert error is not None and "outside the allowed roots" in error
    assert "rank 16" in (lora_load_error("a", str(tiny_lora_r16), 8, ["/"]) or "")


# --- the flag ---------------------------------------------------------------------------------


def test_the_flag_takes_several_roots_in_either_spelling():
    for flag in ("--lora-allowed-roots", "--lora_allowed_roots"):
        inv = parse_command_line(["m", flag, "/a/", "/b", "--enable-lora"])
        assert inv.options.lora_allowed_roots == ["/a", "/b"]
        assert inv.vllm_argv == ["--model", "m", "--enable-lora"]
    assert parse_command_line(["m"]).options.lora_allowed_roots is None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["relative"], "invalid root: 'relative' (an absolute directory)"),
        ([""], "invalid root: '' (an absolute directory)"),
        ([], "expected at least one argument"),
        # Extra arguments appended after the operator's cannot widen the roots.
        (["/models", "--lora_allowed_roots", "/"], "given more than once"),
    ],
)
def test_a_bad_root_is_one_line(args: list[str], expected: str):
    result = subprocess.run(
        [sys.executable, "-m", "vllm_server_ext", "m", "--lora-allowed-roots", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"vllm-ext-serve: error: argument --lora-allowed-roots/--lora_allowed_roots: {expected}\n"
    )


def test_a_nul_in_the_source_is_refused_not_a_crash(root: Path):
    """`os.path.realpath` raises on a NUL: a 500 from the admin port before the fix."""
    error = lora_source_error("a", f"{root}/adapter\0x", [str(root)])
    assert error == "LoRA adapter 'a': source contains a NUL character"
