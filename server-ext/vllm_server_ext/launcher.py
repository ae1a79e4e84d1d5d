"""The launcher: vLLM's own building blocks, composed around the early server.

This module (with `engine_plugin`, which runs in the engine process) holds every import of vLLM
internals; their paths move between releases, so they are pinned to `SUPPORTED_VLLM`. The
sequence is vLLM's `run_server` with three hooks: the socket was bound and served long before
(`cli`), our routes and counters are attached between `init_app_state` and `serve_http`, and the
early server stops right before vLLM's uvicorn takes over the same socket.
"""

from __future__ import annotations

import asyncio
import os
import socket
from argparse import Namespace
from collections.abc import Sequence
from contextlib import ExitStack
from http import HTTPStatus
from typing import Any

import uvicorn
import uvloop
import vllm.envs as envs
from prometheus_client import REGISTRY
from vllm.entrypoints.launchers.api_server.app_state import init_app_state
from vllm.entrypoints.launchers.api_server.entry import build_async_engine_client
from vllm.entrypoints.launchers.app import build_app
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
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.utils.system_utils import set_ulimit
from vllm.v1.engine.output_processor import OutputProcessor
from vllm.v1.metrics.loggers import AggregateStatLoggerBase

from .early import EarlyServer
from .load import EngineLoad, LoadTracker, ProcessSampler
from .logs import log
from .lora import lora_rank_error
from .orca_grpc import OrcaGrpcServer
from .routes import ServerExtension, ServerExtMiddleware, attach_routes
from .state import Phase, ServerState, StateCollector
from .token_load import TokenLoad, TokenLoadCollector

PROG = "vllm-ext-serve"


def parse_vllm_args(argv: Sequence[str], options: Namespace) -> Namespace:
    """Parse `vllm serve` arguments with vLLM's own parser and checks, and check ours against
    them."""
    cli_env_setup()
    parser = make_arg_parser(FlexibleArgumentParser(prog=PROG))
    args = parser.parse_args(list(argv))
    configure_logging_from_args(args)
    validate_parsed_serve_args(args)
    if (args.api_server_count or 1) > 1 or args.headless:
        parser.error("--api-server-count > 1 and --headless are not supported by vllm-ext-serve")
    if (options.orca_formats or options.orca_grpc_port) and args.disable_log_stats:
        parser.error("ORCA load reports need the engine's stats: drop --disable-log-stats")
    if args.enable_lora and "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in os.environ:
        # The point of serving LoRA on Kubernetes is loading adapters at run time (the
        # operator does it); vLLM hides these routes behind this variable.
        os.environ["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    return args


class TokenCountingOutputProcessor(OutputProcessor):
    """vLLM's OutputProcessor plus `TokenLoad` bookkeeping at the points where vLLM already
    touches one request: arrival, each output (inside vLLM's single loop over outputs),
    finish and abort. Installed by swapping the class of the engine's instance."""

    token_load: TokenLoad

    def add_request(self, request: Any, *args: Any, **kwargs: Any) -> None:
        super().add_request(request, *args, **kwargs)
        state = self.request_states.get(request.request_id)
        if state is not None:
            self.token_load.added(request.request_id, state.prompt_len or 0)

    def _update_stats_from_output(self, req_state: Any, engine_core_output: Any, *args: Any):
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


def install_token_load(engine_client: Any) -> TokenLoad:
    processor = engine_client.output_processor
    if type(processor) is not OutputProcessor:
        raise RuntimeError(f"unexpected output processor {type(processor).__name__}")
    load = TokenLoad()
    for request_id, request_state in processor.request_states.items():
        load.added(request_id, request_state.prompt_len or 0)
    processor.token_load = load
    processor.__class__ = TokenCountingOutputProcessor
    return load


def guard_lora_rank(serving_models: Any, max_lora_rank: int) -> None:
    """Refuse, with a 400 naming both ranks, an adapter above `--max-lora-rank` (vLLM answers
    500 for it), before the engine is asked to load it."""
    load = serving_models.load_lora_adapter

    async def load_lora_adapter(request: Any, base_model_name: str | None = None) -> Any:
        error = lora_rank_error(request.lora_name, request.lora_path, max_lora_rank)
        if error is not None:
            return create_error_response(error, "BadRequestError", HTTPStatus.BAD_REQUEST)
        return await load(request, base_model_name)

    serving_models.load_lora_adapter = load_lora_adapter


class OrcaStatLogger(AggregateStatLoggerBase):
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


def track_engine_load(engine_client: Any, tracker: LoadTracker) -> None:
    manager = engine_client.logger_manager  # None only with --disable-log-stats (refused)
    manager.stat_loggers.append(OrcaStatLogger(tracker))


def mark_draining_on_shutdown(engine_client: Any, state: ServerState) -> None:
    """vLLM's SIGTERM handler drains through `engine_client.shutdown`; readiness drops first."""
    shutdown = engine_client.shutdown

    def shutdown_and_drain(*args: Any, **kwargs: Any) -> None:
        state.enter(Phase.DRAINING)
        log.info("draining", extra={"timeout": kwargs.get("timeout")})
        shutdown(*args, **kwargs)

    engine_client.shutdown = shutdown_and_drain


def start_load_reporting(
    engine_client: Any, tracker: LoadTracker, args: Namespace, options: Namespace, stack: ExitStack
) -> None:
    """ORCA's inputs (engine stats, process CPU/memory) and the gRPC service, if asked for;
    everything started here is stopped when `stack` closes."""
    if not (options.orca_formats or options.orca_grpc_port):
        return
    track_engine_load(engine_client, tracker)
    stack.callback(ProcessSampler(tracker).start().stop)
    if options.orca_grpc_port:
        grpc_server = OrcaGrpcServer(
            tracker,
            host=args.host or "",
            port=options.orca_grpc_port,
            min_interval=options.orca_oob_min_interval,
        )
        stack.callback(grpc_server.start().stop)


class AdminServer:
    """The same app on the admin socket, in vLLM's signal-free uvicorn server, with the API
    server's limits and TLS (and certificate refresh). The app's lifespan is the API server's
    alone. vLLM's shutdown (SIGTERM, a dead engine) stops the API server, this one right after."""

    def __init__(self, app: Any, sock: socket.socket, args: Namespace, **kwargs: Any) -> None:
        config = uvicorn.Config(app, lifespan="off", **kwargs)
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


async def serve(
    args: Namespace,
    options: Namespace,
    sock: socket.socket,
    admin_sock: socket.socket | None,
    state: ServerState,
    early: EarlyServer,
) -> None:
    validate_api_server_args(args)
    set_ulimit()
    state.model = args.served_model_name[0] if args.served_model_name else args.model
    state.enter(Phase.LOADING_MODEL)
    log.info("building the engine", extra={"model": args.model})
    with ExitStack() as stack:
        async with build_async_engine_client(args) as engine_client:
            state.enter(Phase.STARTING_API)
            config = engine_client.vllm_config
            supported_tasks = await engine_client.get_supported_tasks()
            # The app is built with its middleware; ours joins vLLM's --middleware list.
            middleware = f"{ServerExtMiddleware.__module__}.{ServerExtMiddleware.__name__}"
            args.middleware = [*args.middleware, middleware]
            app = build_app(args, supported_tasks, engine_client.model_config)
            token_load = install_token_load(engine_client)
            tracker = LoadTracker(
                token_load=token_load, max_num_seqs=config.scheduler_config.max_num_seqs
            )
            ext = ServerExtension(
                state=state,
                tracker=tracker,
                orca_formats=options.orca_formats,
                can_sleep=bool(config.model_config.enable_sleep_mode),
                admin_port=options.admin_port,
            )
            attach_routes(app, ext)
            await init_app_state(engine_client, app.state, args, supported_tasks)
            if args.enable_lora:
                guard_lora_rank(app.state.openai_serving_models, args.max_lora_rank)
            REGISTRY.register(StateCollector(state))  # type: ignore[arg-type]
            token_collector = TokenLoadCollector(token_load, model_name=state.model)
            REGISTRY.register(token_collector)  # type: ignore[arg-type]
            start_load_reporting(engine_client, tracker, args, options, stack)
            mark_draining_on_shutdown(engine_client, state)

            uvicorn_kwargs: dict[str, Any] = {
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
                uvicorn_kwargs["log_config"] = log_config
            early.stop()
            state.enter(Phase.READY)
            log.info("ready", extra={"startup_seconds": state.startup_seconds()})
            admin = AdminServer(app, admin_sock, args, **uvicorn_kwargs) if admin_sock else None
            try:
                # As vLLM's build_and_serve does, with our app; returns once the server stopped.
                shutdown_task = await serve_http(
                    app,
                    sock=sock,
                    enable_ssl_refresh=args.enable_ssl_refresh,
                    host=args.host,
                    port=args.port,
                    h11_max_incomplete_event_size=args.h11_max_incomplete_event_size,
                    h11_max_header_count=args.h11_max_header_count,
                    **uvicorn_kwargs,
                )
            finally:
                if admin:
                    await admin.stop()
        try:
            await shutdown_task
        finally:
            sock.close()
            if admin_sock:
                admin_sock.close()


def run(
    vllm_argv: Sequence[str],
    options: Namespace,
    *,
    sock: socket.socket,
    admin_sock: socket.socket | None,
    state: ServerState,
    early: EarlyServer,
) -> None:
    args = parse_vllm_args(vllm_argv, options)
    uvloop.run(serve(args, options, sock, admin_sock, state, early))
