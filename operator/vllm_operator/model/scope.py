"""Which namespaces the operator serves: all, or those Kopf's `--namespace` flags name."""

from __future__ import annotations

import re
from collections.abc import Sequence

_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")  # a DNS-1123 label


def served_namespaces(flags: Sequence[str], *, clusterwide: bool) -> tuple[str, ...] | None:
    """None for every namespace (`--all-namespaces`), else the namespaces of the `--namespace`
    flags, in order, each once. Each must be an exact name: Kopf also takes patterns (globs,
    `!` negations, comma-separated lists), which it resolves by listing the cluster's
    namespaces, and so would the operator's own loops (the drift check and the leadership read
    each served namespace); an operator that serves namespaces reads nothing cluster-wide.
    ValueError names the flag."""
    if clusterwide:
        return None
    names: list[str] = []
    for flag in flags:
        if len(flag) > 63 or not _NAMESPACE.fullmatch(flag):
            raise ValueError(
                f"--namespace={flag!r}: the operator serves namespaces by their exact names "
                "(no patterns), or every namespace with --all-namespaces"
            )
        if flag not in names:
            names.append(flag)
    if not names:
        raise ValueError("no --namespace and no --all-namespaces: which namespaces to serve?")
    return tuple(names)
