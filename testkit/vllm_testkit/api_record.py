"""The record of every API call the operator made in its tests (the chart's RBAC grants exactly
these), and the verdict on it at the end of a session: pure, so its rules are tested."""

from __future__ import annotations

import json
from pathlib import Path

Call = tuple[str, str, str]  # (verb, API group, resource[/subresource])


def read(path: Path) -> set[Call]:
    return {tuple(c) for c in json.loads(path.read_text())}  # type: ignore[misc]


def write(path: Path, calls: set[Call]) -> None:
    lines = ",\n".join(f"  {json.dumps(list(c))}" for c in sorted(calls))
    path.write_text(f"[\n{lines}\n]\n")


def verdict(
    recorded: set[Call], seen: set[Call], *, full: bool, update: bool
) -> tuple[set[Call] | None, str | None]:
    """(the record to write or None, the failure or None) after a session that saw `seen`.

    A full run (every operator test selected and passed) must have seen exactly the record: a
    recorded call no test made is a grant nobody needs. A partial run can only tell what is
    missing. `update` rewrites instead of failing, from a full run exactly, else by adding;
    a rewrite fails too, so it is never silent."""
    wanted = seen if full else recorded | seen
    if update:
        if wanted == recorded:
            return None, None
        return wanted, "rewrote the API-call record: review the diff, run again without it"
    if missing := sorted(seen - recorded):
        return None, f"API calls missing from the record (and the RBAC): {missing}"
    if full and (unused := sorted(recorded - seen)):
        return None, f"recorded API calls no test made (drop them and their RBAC): {unused}"
    return None, None
