"""The worker role of a multi-node replica: vLLM's headless node (`vllm serve --headless`), run
by vLLM's own `run_headless`, observed.

On a node other than the first of its replica (tensor or pipeline parallelism across nodes),
`run_headless` builds a `MultiprocExecutor` (this node's worker processes: they join the
torch.distributed group at `--master-addr:--master-port` and load their part of the model) and
then blocks until one of them dies. This module runs it with that executor class replaced by a
subclass that says when it is built and whether it ended because a worker died: nothing of
`run_headless` is copied. Imported by `launcher` for `--headless` only.
"""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Callable
from typing import Any

from vllm.entrypoints.cli import serve as vllm_serve
from vllm.v1.executor.multiproc_executor import MultiprocExecutor


def run_headless_node(args: Namespace, on_ready: Callable[[], None]) -> bool:
    """vLLM's `run_headless(args)`, calling `on_ready()` once this node's workers joined the
    group and loaded their part of the model (the executor is built). Returns whether it ended
    because one of this node's workers died (vLLM's own headless mode then exits with status 0);
    SIGTERM and SIGINT raise `SystemExit` (vLLM's handlers)."""
    ended: dict[str, bool] = {}

    class ObservedExecutor(MultiprocExecutor):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            on_ready()

        def start_worker_monitor(self, inline: bool = False) -> None:
            super().start_worker_monitor(inline=inline)
            if inline:  # returns once a worker died (or shutdown began elsewhere)
                ended["worker_died"] = self.is_failed

    args.api_server_count = 0  # what `vllm serve --headless` sets
    vllm_serve.MultiprocExecutor = ObservedExecutor  # type: ignore[misc]
    try:
        vllm_serve.run_headless(args)
    finally:
        vllm_serve.MultiprocExecutor = MultiprocExecutor  # type: ignore[misc]
    return ended.get("worker_died", False)
