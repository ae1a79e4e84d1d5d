"""The engine's and the workers' startup hooks: what `engine_plugin` needs of vLLM, and nothing
more.

vLLM loads general plugins in every process it starts (engine core and tensor-parallel workers
included), so this module imports `vllm.v1.engine.core` (and, for the workers' hook, their
wrapper's module) alone, which those processes have already loaded: no launcher, uvicorn or app
modules (`api` has those).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from vllm.v1.engine.core import EngineCore


def hook_engine_startup(*, profiling: Callable[[], None], warming_up: Callable[[], None]) -> None:
    """In this process, call `profiling` when an `EngineCore` starts memory profiling and KV
    cache allocation (`_initialize_kv_caches`), and `warming_up` when, within that step, its
    executor starts compiling and warming up. Idempotent."""
    if getattr(EngineCore, "_vllm_ext_startup_hook", False):
        return
    initialize_kv_caches = EngineCore._initialize_kv_caches

    @functools.wraps(initialize_kv_caches)
    def _initialize_kv_caches(self, vllm_config):  # type: ignore[no-untyped-def]
        profiling()
        executor = self.model_executor
        warm_up = executor.compile_or_warm_up_model

        def compile_or_warm_up_model(*args, **kwargs):  # type: ignore[no-untyped-def]
            warming_up()
            return warm_up(*args, **kwargs)

        executor.compile_or_warm_up_model = compile_or_warm_up_model
        try:
            return initialize_kv_caches(self, vllm_config)
        finally:
            del executor.compile_or_warm_up_model  # back to the class's method

    EngineCore._initialize_kv_caches = _initialize_kv_caches  # type: ignore[method-assign]
    EngineCore._vllm_ext_startup_hook = True  # type: ignore[attr-defined]


def hook_worker_startup(*, joining: Callable[[], None], joined: Callable[[], None]) -> None:
    """In this process, on a multi-node replica (`--nnodes` above 1), call `joining` when a
    worker starts initialising its device and torch.distributed (where it waits for every other
    node's workers), and `joined` when that is done (it loads the weights next). Idempotent."""
    from vllm.v1.worker.worker_base import WorkerWrapperBase

    if getattr(WorkerWrapperBase, "_vllm_ext_startup_hook", False):
        return
    init_device = WorkerWrapperBase.init_device

    @functools.wraps(init_device)
    def _init_device(self):  # type: ignore[no-untyped-def]
        multi_node = self.vllm_config.parallel_config.nnodes > 1
        if multi_node:
            joining()
        result = init_device(self)
        if multi_node:
            joined()
        return result

    WorkerWrapperBase.init_device = _init_device  # type: ignore[method-assign]
    WorkerWrapperBase._vllm_ext_startup_hook = True  # type: ignore[attr-defined]
