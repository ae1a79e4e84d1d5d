"""`vllm.general_plugins` entry point: reports the engine's startup phases to the launcher.

vLLM loads general plugins in every process it starts (engine core and tensor-parallel workers
included); this one acts only in processes started by `vllm-ext-serve` (the phase socket is in
their environment), and imports vLLM's internals only there, through `vllm_0_32.engine`: the
engine core's module, which those processes have already loaded, and nothing of the API
server's. It reports `profiling` when the engine core starts memory profiling and KV cache
allocation, and `warming_up` when, within that, its executor starts compiling and warming up;
on a multi-node replica, `joining_group` when a worker process starts initialising
torch.distributed (where it waits for the other nodes) and `loading_model` again once it joined.

vLLM calls `register()` unguarded: an exception here would stop the engine. A failed hook costs
the two phase reports only (one warning line), never the engine.
"""

from __future__ import annotations

import os

from .engine_phases import PHASE_SOCKET_ENV, report
from .lifecycle import Phase
from .logs import log


def register() -> None:
    if not os.environ.get(PHASE_SOCKET_ENV):
        return
    try:
        from .vllm_0_32.engine import hook_engine_startup

        hook_engine_startup(
            profiling=lambda: report(Phase.PROFILING),
            warming_up=lambda: report(Phase.WARMING_UP),
        )
    except Exception as e:
        log.warning(
            "vllm-ext-serve: the engine's startup phases will not be reported "
            f"(profiling, warming_up): {type(e).__name__}: {e}"
        )
    try:
        from .vllm_0_32.engine import hook_worker_startup

        hook_worker_startup(
            joining=lambda: report(Phase.JOINING_GROUP),
            joined=lambda: report(Phase.LOADING_MODEL),
        )
    except Exception as e:
        log.warning(
            "vllm-ext-serve: the workers' startup phase will not be reported "
            f"(joining_group): {type(e).__name__}: {e}"
        )
