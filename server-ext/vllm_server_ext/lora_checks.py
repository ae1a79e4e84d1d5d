"""Checks on a LoRA adapter that can be made before asking the engine to load it."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

# A hub id as vLLM passes it to the hub: ORG/NAME, nothing more.
_HUB_ID = re.compile(r"[A-Za-z0-9._-]+/[A-Za-z0-9._-]+")


def adapter_rank(adapter_dir: str | Path) -> int | None:
    """The largest rank in a local PEFT adapter's config (`r` and any `rank_pattern`), or None
    when the config is not a readable local file (a hub id, a resolver name, ...)."""
    try:
        config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return None
    ranks = [config.get("r")]
    ranks += list((config.get("rank_pattern") or {}).values())
    valid = [r for r in ranks if isinstance(r, int)]
    return max(valid) if valid else None


def lora_rank_error(name: str, path: str, max_rank: int) -> str | None:
    rank = adapter_rank(path)
    if rank is None or rank <= max_rank:
        return None
    return (
        f"LoRA adapter '{name}' at '{path}' has rank {rank}, above this server's "
        f"--max-lora-rank {max_rank}; restart the server with --max-lora-rank {rank} or higher"
    )


def is_hub_id(path: str) -> bool:
    """`ORG/NAME`: exactly one slash, letters, digits, `.`, `_` and `-`, neither part `.`/`..`."""
    return _HUB_ID.fullmatch(path) is not None and not ({".", ".."} & set(path.split("/")))


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def lora_source_error(name: str, path: str, allowed_roots: Sequence[str]) -> str | None:
    """Why the source `path` of adapter `name` is refused with `--lora-allowed-roots`, or None.

    vLLM loads an absolute path as is, a relative one from the server's working directory if it
    exists there, and anything else from the hub. So: a path on disk (absolute, or a hub-looking
    one that exists) must have its real path (symlinks resolved) inside one of the roots (real
    paths too); anything else must be a hub id `ORG/NAME`."""
    if "\0" in path:
        return f"LoRA adapter '{name}': source contains a NUL character"
    if not os.path.isabs(path) and not is_hub_id(path):
        return (
            f"LoRA adapter '{name}': source '{path}' is neither an absolute path nor a hub id "
            "ORG/NAME"
        )
    if not os.path.isabs(path) and not os.path.lexists(path):
        return None  # from the hub
    real = os.path.realpath(path)
    if any(_inside(real, os.path.realpath(root)) for root in allowed_roots):
        return None
    # Where it really leads is not said: the caller learns nothing of the filesystem.
    return (
        f"LoRA adapter '{name}' at '{path}' is outside the allowed roots "
        f"{', '.join(allowed_roots)} (symlinks resolved; --lora-allowed-roots)"
    )


def lora_load_error(
    name: str, path: str, max_rank: int, allowed_roots: Sequence[str] | None
) -> str | None:
    """Why loading adapter `name` from `path` is refused, or None: first where it comes from (with
    allowed roots: nothing outside them is even read), then its rank."""
    if allowed_roots and (error := lora_source_error(name, path, allowed_roots)) is not None:
        return error
    return lora_rank_error(name, path, max_rank)
