"""`vllm-operator [kopf run flags]`: Kopf's `run` with this operator's handlers."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Sequence


def kopf_argv(argv: Sequence[str]) -> list[str]:
    args = list(argv)
    scoped = any(
        a in ("-A", "--all-namespaces") or a.startswith(("-n", "--namespace")) for a in args
    )
    return ["run", "-m", "vllm_operator.handlers", *([] if scoped else ["--all-namespaces"]), *args]


def main(argv: Sequence[str] | None = None) -> None:
    from kopf.cli import main as kopf_main

    from .config import POD_ID_ENV

    # With peering, Kopf names this replica by $POD_ID (the chart sets the pod's name), else by
    # a random id the drift loop could not know.
    os.environ.setdefault(POD_ID_ENV, f"{socket.gethostname()}-{os.getpid()}")

    kopf_main(args=kopf_argv(sys.argv[1:] if argv is None else argv), prog_name="vllm-operator")
