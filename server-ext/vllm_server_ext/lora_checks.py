"""Checks on a LoRA adapter that can be made before asking the engine to load it."""

from __future__ import annotations

import json
from pathlib import Path


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
