"""`vllm.general_plugins` entry point: reports the engine's startup phases to the launcher.

vLLM loads general plugins in every process it starts; this one acts only in processes started
by `vllm-ext-serve` (the phase socket is in their environment). It wraps two steps of
`EngineCore` (vLLM internals, pinned to the supported vLLM version):
`_initialize_kv_caches` (memory profiling + KV cache allocation) and, within it, the executor's
`compile_or_warm_up_model`.
"""

from __future__ import annotations

import functools
import os

from .phases import PHASE_SOCKET_ENV, report
from .state import Phase


def register() -> None:
    if not os.environ.get(PHASE_SOCKET_ENV):
        return
    from vllm.v1.engine.core import EngineCore

    if getattr(EngineCore, "_vllm_ext_phases", False):
        return
    initialize_kv_caches = EngineCore._initialize_kv_caches

    @functools.wraps(initialize_kv_caches)
    def _initialize_kv_caches(self, vllm_config):  # type: ignore[no-untyped-def]
        report(Phase.PROFILING)
        executor = self.model_executor
        warm_up = executor.compile_or_warm_up_model

        def compile_or_warm_up_model(*args, **kwargs):  # type: ignore[no-untyped-def]
            report(Phase.WARMING_UP)
            return warm_up(*args, **kwargs)

        executor.compile_or_warm_up_model = compile_or_warm_up_model
        try:
            return initialize_kv_caches(self, vllm_config)
        finally:
            del executor.compile_or_warm_up_model  # back to the class's method

    EngineCore._initialize_kv_caches = _initialize_kv_caches
    EngineCore._vllm_ext_phases = True
