"""`vllm.general_plugins` entry point: reports the engine's startup phases to the launcher.

vLLM loads general plugins in every process it starts; this one acts only in processes started
by `vllm-ext-serve` (the phase socket is in their environment), and imports vLLM's internals
(through `vllm_0_32`) only there. It reports `profiling` when the engine core starts memory
profiling and KV cache allocation, and `warming_up` when, within that, its executor starts
compiling and warming up.
"""

from __future__ import annotations

import os

from .engine_phases import PHASE_SOCKET_ENV, report
from .lifecycle import Phase


def register() -> None:
    if not os.environ.get(PHASE_SOCKET_ENV):
        return
    from .vllm_0_32 import hook_engine_startup

    hook_engine_startup(
        profiling=lambda: report(Phase.PROFILING),
        warming_up=lambda: report(Phase.WARMING_UP),
    )
