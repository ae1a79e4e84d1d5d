"""Every touch of vLLM's internals, written against vLLM 0.32.

vLLM moves its internal paths and private methods between releases, so the rest of the package
talks to the small surface here: the launcher's steps (vLLM's own `setup_server` and
`run_server_worker` pieces, with room for our hooks between them), the `Engine` facade, and the
engine process's startup hook. `VLLM_SYMBOLS` lists each vLLM symbol this module relies on (and
`SERVE_ARGS` each `vllm serve` argument the package reads), checked against the installed vLLM
by `tests/server/test_vllm_compat.py` in seconds. A new vLLM gets a new module, this one its draft.

The three modules that build vLLM's app take ~0.3 s to import and are imported where they are
used: the engine process imports this module for its startup hook alone.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from argparse import Namespace
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import uvicorn

from .load_tracker import EngineLoad, LoadTracker
from .logs import log
from .token_load import TokenLoad

if TYPE_CHECKING:
    from fastapi import FastAPI
    from vllm.v1.engine.async_llm import AsyncLLM


@dataclass(frozen=True)
class Symbol:
    """One vLLM symbol this module relies on."""

    module: str
    name: str  # inside the module; "Class.attribute" for a method or property
    params: tuple[str, ...] = ()  # its leading parameters (after self), as called or overridden
    attrs: tuple[str, ...] = ()  # attributes read or replaced on its instances (or, for a
    # function, set on the object it fills)


_LAUNCHER = "vllm.entrypoints.launchers"
VLLM_SYMBOLS: tuple[Symbol, ...] = (
    # Parsing and checking `vllm serve` arguments, as vLLM's api_server entry point does.
    Symbol("vllm.entrypoints.serve.utils.api_utils", "cli_env_setup"),
    Symbol("vllm.utils.argparse_utils", "FlexibleArgumentParser"),
    Symbol(f"{_LAUNCHER}.cli_args", "make_arg_parser", params=("parser",)),
    Symbol("vllm.logger", "configure_logging_from_args", params=("args",)),
    Symbol(f"{_LAUNCHER}.cli_args", "validate_parsed_serve_args", params=("args",)),
    Symbol("vllm.envs", "VLLM_ALLOW_RUNTIME_LORA_UPDATING"),
    # `setup_server`'s steps, but its socket.
    Symbol("vllm.tool_parsers", "ToolParserManager.import_tool_parser", params=("plugin_path",)),
    Symbol(
        "vllm.reasoning",
        "ReasoningParserManager.import_reasoning_parser",
        params=("plugin_path",),
    ),
    Symbol(f"{_LAUNCHER}.launcher", "validate_api_server_args", params=("args",)),
    Symbol("vllm.utils.system_utils", "set_ulimit"),
    # The engine client and vLLM's app, as `run_server_worker` and `build_and_serve` build them.
    Symbol(f"{_LAUNCHER}.api_server.entry", "build_async_engine_client", params=("args",)),
    Symbol(
        "vllm.v1.engine.async_llm",
        "AsyncLLM",
        attrs=("vllm_config", "model_config", "output_processor", "logger_manager"),
    ),
    Symbol("vllm.v1.engine.async_llm", "AsyncLLM.errored"),
    Symbol("vllm.v1.engine.async_llm", "AsyncLLM.is_sleeping"),
    Symbol("vllm.v1.engine.async_llm", "AsyncLLM.get_supported_tasks"),
    Symbol("vllm.v1.engine.async_llm", "AsyncLLM.shutdown", params=("timeout",)),
    Symbol("vllm.config", "VllmConfig", attrs=("model_config", "scheduler_config")),
    Symbol("vllm.config", "ModelConfig", attrs=("enable_sleep_mode",)),
    Symbol("vllm.config", "SchedulerConfig", attrs=("max_num_seqs",)),
    Symbol(f"{_LAUNCHER}.app", "build_app", params=("args", "supported_tasks", "model_config")),
    Symbol(
        f"{_LAUNCHER}.api_server.app_state",
        "init_app_state",
        params=("engine_client", "state", "args", "supported_tasks"),
        attrs=("openai_serving_models",),
    ),
    # Refusing a LoRA adapter before the engine loads it.
    Symbol(
        "vllm.entrypoints.openai.models.serving",
        "OpenAIServingModels.load_lora_adapter",
        params=("request", "base_model_name"),
    ),
    Symbol(
        "vllm.entrypoints.serve.lora.protocol",
        "LoadLoRAAdapterRequest",
        attrs=("lora_name", "lora_path"),
    ),
    Symbol(
        "vllm.entrypoints.serve",
        "create_error_response",
        params=("message", "err_type", "status_code"),
    ),
    # Serving HTTP, on the API socket and the admin socket.
    Symbol(f"{_LAUNCHER}.launcher", "serve_http", params=("app", "sock", "enable_ssl_refresh")),
    Symbol(f"{_LAUNCHER}.launcher", "NoSignalServer", params=("config",)),
    Symbol(
        f"{_LAUNCHER}.utils.ssl",
        "SSLCertRefresher",
        params=("ssl_context", "key_path", "cert_path", "ca_path"),
    ),
    Symbol(f"{_LAUNCHER}.utils.server_utils", "get_uvicorn_log_config", params=("args",)),
    Symbol(f"{_LAUNCHER}.utils.constants", "H11_MAX_HEADER_COUNT_DEFAULT"),
    Symbol(f"{_LAUNCHER}.utils.constants", "H11_MAX_INCOMPLETE_EVENT_SIZE_DEFAULT"),
    Symbol("vllm.envs", "VLLM_HTTP_TIMEOUT_KEEP_ALIVE"),
    # Token load: vLLM's output processor, subclassed and swapped onto the engine's instance.
    Symbol("vllm.v1.engine.output_processor", "OutputProcessor", attrs=("request_states",)),
    Symbol("vllm.v1.engine.output_processor", "OutputProcessor.add_request", params=("request",)),
    Symbol(
        "vllm.v1.engine.output_processor",
        "OutputProcessor._update_stats_from_output",
        params=("req_state", "engine_core_output"),
    ),
    Symbol(
        "vllm.v1.engine.output_processor",
        "OutputProcessor._finish_request",
        params=("req_state",),
    ),
    Symbol(
        "vllm.v1.engine.output_processor",
        "OutputProcessor.abort_requests",
        params=("request_ids", "internal"),
    ),
    Symbol("vllm.v1.engine.output_processor", "RequestState", attrs=("request_id", "prompt_len")),
    Symbol("vllm.v1.engine", "EngineCoreRequest", attrs=("request_id",)),
    Symbol("vllm.v1.engine", "EngineCoreOutput", attrs=("new_token_ids",)),
    # Engine load for ORCA: a stat logger added to the engine client's.
    Symbol("vllm.v1.metrics.loggers", "StatLoggerManager", attrs=("stat_loggers",)),
    Symbol("vllm.v1.metrics.loggers", "AggregateStatLoggerBase"),
    Symbol(
        "vllm.v1.metrics.loggers",
        "AggregateStatLoggerBase.record",
        params=("scheduler_stats", "iteration_stats", "mm_cache_stats", "engine_idx"),
    ),
    Symbol("vllm.v1.metrics.loggers", "AggregateStatLoggerBase.log_engine_initialized"),
    Symbol(
        "vllm.v1.metrics.loggers",
        "AggregateStatLoggerBase.record_admission_rejection",
        params=("reason",),
    ),
    Symbol(
        "vllm.v1.metrics.stats",
        "SchedulerStats",
        attrs=(
            "num_running_reqs",
            "num_waiting_reqs",
            "kv_cache_usage",
            "running_lora_adapters",
            "waiting_lora_adapters",
        ),
    ),
    # The engine process's startup steps.
    Symbol("vllm.v1.engine.core", "EngineCore", attrs=("model_executor",)),
    Symbol("vllm.v1.engine.core", "EngineCore._initialize_kv_caches", params=("vllm_config",)),
    Symbol("vllm.v1.executor", "Executor.compile_or_warm_up_model"),
)

# The `vllm serve` arguments this package reads by name (their `dest`s).
SERVE_ARGS = frozenset(
    {
        "api_server_count",
        "data_parallel_multi_port_external_lb",
        "disable_log_stats",
        "disable_uvicorn_access_log",
        "enable_lora",
        "enable_ssl_refresh",
        "grpc",
        "h11_max_header_count",
        "h11_max_incomplete_event_size",
        "headless",
        "host",
        "max_lora_rank",
        "middleware",
        "model",
        "port",
        "reasoning_parser_plugin",
        "served_model_name",
        "ssl_ca_certs",
        "ssl_cert_reqs",
        "ssl_certfile",
        "ssl_ciphers",
        "ssl_keyfile",
        "tool_parser_plugin",
        "uds",
        "uvicorn_log_level",
    }
)


# vLLM's own modules come after the table, so that the table can still be read (and checked)
# when one of them has moved.
# ruff: noqa: E402
import vllm.envs as envs
from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
from vllm.entrypoints.launchers.launcher import (
    NoSignalServer,
    serve_http,
    validate_api_server_args,
)
from vllm.entrypoints.launchers.utils.constants import (
    H11_MAX_HEADER_COUNT_DEFAULT,
    H11_MAX_INCOMPLETE_EVENT_SIZE_DEFAULT,
)
from vllm.entrypoints.launchers.utils.server_utils import get_uvicorn_log_config
from vllm.entrypoints.launchers.utils.ssl import SSLCertRefresher
from vllm.entrypoints.serve import create_error_response
from vllm.entrypoints.serve.utils.api_utils import cli_env_setup
from vllm.logger import configure_logging_from_args
from vllm.reasoning import ReasoningParserManager
from vllm.tool_parsers import ToolParserManager
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.utils.system_utils import set_ulimit
from vllm.v1.engine.core import EngineCore
from vllm.v1.engine.output_processor import OutputProcessor
from vllm.v1.metrics.loggers import AggregateStatLoggerBase

# --- arguments -------------------------------------------------------------------------------


def parse_serve_args(argv: Sequence[str], prog: str) -> Namespace:
    """`vllm serve` arguments, parsed and checked as vLLM's api_server entry point does."""
    cli_env_setup()
    args = make_arg_parser(FlexibleArgumentParser(prog=prog)).parse_args(list(argv))
    configure_logging_from_args(args)
    validate_parsed_serve_args(args)
    return args


def allow_runtime_lora_updates() -> None:
    """Turn on vLLM's runtime LoRA routes (hidden behind this variable), unless it is set."""
    os.environ.setdefault("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "True")


def prepare_api_server(args: Namespace) -> None:
    """What vLLM's `setup_server` does before the engine is built, but binding the socket (ours
    was bound long before): import the tool and reasoning parser plugins (so their names pass
    the check), check the API server's arguments, raise the open-files limit."""
    # vLLM's own test for "a plugin was given" (empty strings and the like are skipped).
    if args.tool_parser_plugin and len(args.tool_parser_plugin) > 3:
        ToolParserManager.import_tool_parser(args.tool_parser_plugin)
    if args.reasoning_parser_plugin and len(args.reasoning_parser_plugin) > 3:
        ReasoningParserManager.import_reasoning_parser(args.reasoning_parser_plugin)
    validate_api_server_args(args)
    set_ulimit()


# --- the engine ------------------------------------------------------------------------------


class Engine:
    """vLLM's engine client (`AsyncLLM`), as this server uses it."""

    def __init__(self, client: AsyncLLM, supported_tasks: tuple[str, ...]) -> None:
        self._client = client
        self.supported_tasks = supported_tasks

    @property
    def errored(self) -> bool:
        return self._client.errored

    async def is_sleeping(self) -> bool:
        return await self._client.is_sleeping()

    @property
    def sleep_mode(self) -> bool:
        """Whether the engine can sleep at all (`--enable-sleep-mode`)."""
        return bool(self._client.vllm_config.model_config.enable_sleep_mode)

    @property
    def max_num_seqs(self) -> int:
        return self._client.vllm_config.scheduler_config.max_num_seqs

    def install_token_load(self) -> TokenLoad:
        """Start counting tokens per request (from the requests already known, if any)."""
        processor = self._client.output_processor
        if type(processor) is not OutputProcessor:
            raise RuntimeError(f"unexpected output processor {type(processor).__name__}")
        load = TokenLoad()
        for request_id, request_state in processor.request_states.items():
            load.added(request_id, request_state.prompt_len or 0)
        processor.token_load = load  # type: ignore[attr-defined]
        processor.__class__ = _TokenCountingOutputProcessor
        return load

    def track_load(self, tracker: LoadTracker) -> None:
        """Feed each engine step's scheduler stats into `tracker`."""
        manager = self._client.logger_manager  # None only with --disable-log-stats (refused)
        assert manager is not None
        manager.stat_loggers.append(_OrcaStatLogger(tracker))

    def on_shutdown(self, callback: Callable[[float | None], None]) -> None:
        """Call `callback(timeout)` when vLLM starts shutting the engine down (its SIGTERM
        handler drains through the client's `shutdown`), before the drain."""
        shutdown = self._client.shutdown

        def shutdown_after_callback(timeout: float | None = None) -> None:
            callback(timeout)
            shutdown(timeout=timeout)

        self._client.shutdown = shutdown_after_callback  # type: ignore[method-assign]


@asynccontextmanager
async def start_engine(args: Namespace) -> AsyncIterator[Engine]:
    """vLLM's engine client, shut down on exit."""
    from vllm.entrypoints.launchers.api_server.entry import build_async_engine_client

    async with build_async_engine_client(args) as client:
        yield Engine(client, await client.get_supported_tasks())  # type: ignore[arg-type]


class _TokenCountingOutputProcessor(OutputProcessor):
    """vLLM's OutputProcessor plus `TokenLoad` bookkeeping at the points where vLLM already
    touches one request: arrival, each output (inside vLLM's single loop over outputs),
    finish and abort. Installed by swapping the class of the engine's instance."""

    token_load: TokenLoad

    def add_request(self, request: Any, *args: Any, **kwargs: Any) -> None:
        super().add_request(request, *args, **kwargs)
        state = self.request_states.get(request.request_id)
        if state is not None:
            self.token_load.added(request.request_id, state.prompt_len or 0)

    def _update_stats_from_output(self, req_state: Any, engine_core_output: Any, *args: Any):  # type: ignore[no-untyped-def]
        if engine_core_output.new_token_ids:
            self.token_load.generated(req_state.request_id, len(engine_core_output.new_token_ids))
        return super()._update_stats_from_output(req_state, engine_core_output, *args)

    def _finish_request(self, req_state: Any) -> None:
        self.token_load.finished(req_state.request_id)
        super()._finish_request(req_state)

    def abort_requests(self, request_ids: Any, internal: bool) -> list[str]:
        aborted = super().abort_requests(request_ids, internal)
        for request_id in aborted:
            self.token_load.finished(request_id)
        return aborted


class _OrcaStatLogger(AggregateStatLoggerBase):
    """Feeds each engine step's scheduler stats into the load tracker (O(1) per step)."""

    def __init__(self, tracker: LoadTracker) -> None:  # not vLLM's factory signature: we add it
        self.tracker = tracker

    def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx=0):  # type: ignore[no-untyped-def]
        if scheduler_stats is None:
            return
        self.tracker.record_engine(
            engine_idx,
            EngineLoad(
                num_requests_running=scheduler_stats.num_running_reqs,
                num_requests_waiting=scheduler_stats.num_waiting_reqs,
                kv_cache_usage=scheduler_stats.kv_cache_usage,
                num_lora_adapters_running=len(scheduler_stats.running_lora_adapters),
                num_lora_adapters_waiting=len(scheduler_stats.waiting_lora_adapters),
            ),
        )

    def log_engine_initialized(self) -> None:
        pass

    def record_admission_rejection(self, reason: str) -> None:
        pass


# --- vLLM's app ------------------------------------------------------------------------------


def build_api_app(engine: Engine, args: Namespace, middleware: type) -> FastAPI:
    """vLLM's app, with `middleware` (a pure ASGI class taking the app) last in vLLM's
    `--middleware` list: the app refuses middleware once built."""
    from vllm.entrypoints.launchers.app import build_app

    args.middleware = [*args.middleware, f"{middleware.__module__}.{middleware.__qualname__}"]
    return build_app(args, engine.supported_tasks, engine._client.model_config)  # type: ignore[arg-type]


async def init_api_state(engine: Engine, app: FastAPI, args: Namespace) -> None:
    """vLLM's handlers on `app.state` (models, completions, chat, ...)."""
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state

    await init_app_state(engine._client, app.state, args, engine.supported_tasks)  # type: ignore[arg-type]


def check_lora_loads(app: FastAPI, check: Callable[[str, str], str | None]) -> None:
    """Before vLLM asks the engine to load a LoRA adapter, `check(name, path)`: a message
    refuses the load with a 400 carrying it (in vLLM's error format)."""
    models = app.state.openai_serving_models
    load = models.load_lora_adapter

    async def load_lora_adapter(request: Any, base_model_name: str | None = None) -> Any:
        error = check(request.lora_name, request.lora_path)
        if error is not None:
            return create_error_response(error, "BadRequestError", HTTPStatus.BAD_REQUEST)
        return await load(request, base_model_name)

    models.load_lora_adapter = load_lora_adapter


# --- HTTP ------------------------------------------------------------------------------------


def uvicorn_settings(args: Namespace) -> dict[str, Any]:
    """uvicorn's settings as vLLM's `build_and_serve` passes them."""
    settings: dict[str, Any] = {
        "log_level": args.uvicorn_log_level,
        "access_log": not args.disable_uvicorn_access_log,
        "timeout_keep_alive": envs.VLLM_HTTP_TIMEOUT_KEEP_ALIVE,
        "ssl_keyfile": args.ssl_keyfile,
        "ssl_certfile": args.ssl_certfile,
        "ssl_ca_certs": args.ssl_ca_certs,
        "ssl_cert_reqs": args.ssl_cert_reqs,
        "ssl_ciphers": args.ssl_ciphers,
    }
    if (log_config := get_uvicorn_log_config(args)) is not None:
        settings["log_config"] = log_config
    return settings


async def serve_api(
    app: FastAPI, sock: socket.socket, args: Namespace, settings: dict[str, Any]
) -> Awaitable[Any]:
    """Serve `app` on `sock` with vLLM's `serve_http` (its signal handlers drain the engine and
    its watchdog stops the server when the engine dies) until the server stops; returns what
    is left of the shutdown, to await once the engine client is closed."""
    return await serve_http(
        app,
        sock=sock,
        enable_ssl_refresh=args.enable_ssl_refresh,
        host=args.host,
        port=args.port,
        h11_max_incomplete_event_size=args.h11_max_incomplete_event_size,
        h11_max_header_count=args.h11_max_header_count,
        **settings,
    )


class AdminServer:
    """The same app on the admin socket, in vLLM's signal-free uvicorn server, with the API
    server's limits and TLS (and certificate refresh). The app's lifespan is the API server's
    alone. vLLM's shutdown (SIGTERM, a dead engine) stops the API server, this one right after."""

    def __init__(
        self, app: FastAPI, sock: socket.socket, args: Namespace, settings: dict[str, Any]
    ) -> None:
        config = uvicorn.Config(app, lifespan="off", **settings)
        config.h11_max_incomplete_event_size = (  # type: ignore[attr-defined]
            args.h11_max_incomplete_event_size or H11_MAX_INCOMPLETE_EVENT_SIZE_DEFAULT
        )
        config.h11_max_header_count = (  # type: ignore[attr-defined]
            args.h11_max_header_count or H11_MAX_HEADER_COUNT_DEFAULT
        )
        config.load()
        self.refresher = (
            SSLCertRefresher(
                ssl_context=config.ssl,
                key_path=config.ssl_keyfile,
                cert_path=config.ssl_certfile,
                ca_path=config.ssl_ca_certs,
            )
            if args.enable_ssl_refresh
            else None
        )
        self.server = NoSignalServer(config)
        self.task = asyncio.get_running_loop().create_task(self.server.serve(sockets=[sock]))
        log.info("admin port open", extra={"address": sock.getsockname()})

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.refresher is not None:
            self.refresher.stop()
        await asyncio.gather(self.task, return_exceptions=True)


# --- the engine process ----------------------------------------------------------------------


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
