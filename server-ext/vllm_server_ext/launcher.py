"""The launcher: vLLM's own server, composed around the early server.

The sequence is vLLM's `run_server`, log lines included (through `vllm_0_32.api`: the compat
package alone knows vLLM's internals), with three hooks: the socket was bound and served long
before (`cli`), our routes and counters join vLLM's app before it serves, and the early server
stops right before vLLM's uvicorn takes over the same socket. With an admin port, the API port
serves vLLM's app without its LoRA admin routes, the admin port all of it.

With `--headless` (and `--nnodes` above 1, `--node-rank` above 0) the process is the worker role
of a multi-node replica instead: vLLM's headless node (`vllm_0_32.headless`), no API, the early
server answering `/health`, `/ready` and `/metrics` for the process's whole life.
"""

from __future__ import annotations

import functools
import socket
from argparse import Namespace
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import uvloop
from prometheus_client import REGISTRY

from .admin_auth import AdminAuthMiddleware, AdminTokenVerifier, parse_public_key
from .cli import PROG, Invocation, usage_error
from .early import EarlyServer
from .lifecycle import Phase, ServerFailure, ServerState, StateCollector
from .load_tracker import LoadTracker
from .logs import log
from .lora_checks import lora_load_error
from .orca_grpc import OrcaGrpcServer
from .process_sampler import ProcessSampler
from .routes import (
    ServerExtension,
    ServerExtMiddleware,
    attach_routes,
    lora_managed_on_admin_port,
)
from .token_load import TokenLoadCollector
from .vllm_0_32.api import (
    AdminServer,
    Engine,
    allow_runtime_lora_updates,
    build_api_app,
    check_lora_loads,
    init_api_state,
    parse_serve_args,
    prepare_api_server,
    restrict_lora_resolvers,
    serve_api,
    split_for_admin_port,
    start_engine,
    uvicorn_settings,
)


def parse_vllm_args(invocation: Invocation) -> Namespace:
    """Parse `vllm serve` arguments with vLLM's own parser and checks, and refuse, in one line,
    what this server cannot run as `vllm serve` would."""
    args = parse_serve_args(invocation.vllm_argv, PROG)
    if (refusal := unsupported(args, invocation)) is not None:
        usage_error(refusal)
    if args.enable_lora and not args.headless:
        # The point of serving LoRA on Kubernetes is loading adapters at run time (the
        # operator does it).
        allow_runtime_lora_updates()
    return args


def unsupported(args: Namespace, invocation: Invocation) -> str | None:
    """Why this server cannot do what `vllm serve` would with `args`, if so."""
    if args.headless:
        if args.nnodes < 2 or args.node_rank < 1:
            return (
                "argument --headless: vllm-ext-serve runs it as the worker of a multi-node "
                "replica only: give --nnodes above 1 and --node-rank above 0"
            )
        if args.data_parallel_size != 1:
            # vLLM's headless node then runs whole engines (data parallel ranks), no workers.
            return (
                "argument --headless: not supported by vllm-ext-serve with --data-parallel-size "
                "above 1 (its worker role spans tensor and pipeline parallelism only)"
            )
    if args.headless and args.api_server_count is not None:
        return "argument --api-server-count: not allowed with --headless (a worker serves no API)"
    if args.api_server_count not in (None, 1):
        # 0 is `vllm serve`'s headless mode, above 1 its API server processes.
        return (
            f"argument --api-server-count: {args.api_server_count} is not supported by "
            "vllm-ext-serve (one API server per process)"
        )
    if args.grpc:
        return "argument --grpc: not supported by vllm-ext-serve (it serves HTTP)"
    if args.data_parallel_multi_port_external_lb:
        return (
            "argument --data-parallel-multi-port-external-lb: not supported by vllm-ext-serve "
            "(one API server per process)"
        )
    options = invocation.options
    orca = options.orca_formats or options.orca_grpc_port
    if orca and args.disable_log_stats and not args.headless:
        return "ORCA load reports need the engine's stats: drop --disable-log-stats"
    # The sockets were bound from the command line before vLLM was imported: a --config file
    # (which vLLM reads) cannot move them.
    bound = {"host": invocation.host, "port": invocation.port, "uds": invocation.uds}
    read = {"host": args.host or "", "port": args.port, "uds": args.uds}
    for name, value in bound.items():
        if read[name] != value:
            return (
                f"argument --{name}: {read[name]!r} in --config, but the server bound {value!r} "
                f"from the command line before reading it: give --{name} on the command line"
            )
    return None


def start_load_reporting(
    engine: Engine, tracker: LoadTracker, args: Namespace, options: Namespace, stack: ExitStack
) -> None:
    """ORCA's inputs (engine stats, process CPU/memory) and the gRPC service, if asked for;
    everything started here is stopped when `stack` closes."""
    if not (options.orca_formats or options.orca_grpc_port):
        return
    engine.track_load(tracker)
    stack.callback(ProcessSampler(tracker).start().stop)
    if options.orca_grpc_port:
        grpc_server = OrcaGrpcServer(
            tracker,
            host=args.host or "",
            port=options.orca_grpc_port,
            min_interval=options.orca_oob_min_interval,
        )
        stack.callback(grpc_server.start().stop)


def admin_auth(args: Namespace, options: Namespace) -> Callable[[Any], Any] | None:
    """The admin port's check of the operator's token, as a middleware factory, if the command
    line gives its key; else None (the admin port takes vLLM's `--api-key`, if any)."""
    if options.admin_token_public_key is None:
        if not args.api_key:
            log.warning(
                "the admin port takes LoRA loads from anyone who reaches it: "
                "give --admin-token-public-key (the operator does) or keep it to trusted peers"
            )
        return None
    verifier = AdminTokenVerifier(
        parse_public_key(options.admin_token_public_key), options.admin_token_audience
    )
    log.info("admin port: operator tokens required", extra={"audience": verifier.audience})
    return functools.partial(AdminAuthMiddleware, verifier=verifier)


async def serve(
    args: Namespace,
    options: Namespace,
    sock: socket.socket,
    admin_sock: socket.socket | None,
    state: ServerState,
    early: EarlyServer,
) -> None:
    prepare_api_server(args)
    state.model = args.served_model_name[0] if args.served_model_name else args.model
    state.enter(Phase.LOADING_MODEL)
    log.info("building the engine", extra={"model": args.model})
    with ExitStack() as stack:
        async with start_engine(args) as engine:
            state.enter(Phase.STARTING_API)
            app = build_api_app(engine, args, ServerExtMiddleware)
            token_load = engine.install_token_load()
            tracker = LoadTracker(token_load=token_load, max_num_seqs=engine.max_num_seqs)
            ext = ServerExtension(
                state=state,
                tracker=tracker,
                orca_formats=options.orca_formats,
                admin_port=options.admin_port,
            )
            attach_routes(app, ext, engine)
            await init_api_state(engine, app, args)
            max_rank, roots = args.max_lora_rank, options.lora_allowed_roots

            def check(name: str, path: str) -> str | None:
                return lora_load_error(name, path, max_rank, roots)

            if args.enable_lora:
                check_lora_loads(app, check)
            # vLLM's LoRA resolvers load what any API client names: off with an admin port.
            restrict_lora_resolvers(app, check, off=admin_sock is not None)
            REGISTRY.register(StateCollector(state))  # type: ignore[arg-type]
            token_collector = TokenLoadCollector(token_load, model_name=state.model)
            REGISTRY.register(token_collector)  # type: ignore[arg-type]
            start_load_reporting(engine, tracker, args, options, stack)

            def drain(timeout: float | None) -> None:
                # Readiness drops before vLLM drains (its SIGTERM handler).
                state.enter(Phase.DRAINING)
                log.info("draining", extra={"timeout": timeout})

            engine.on_shutdown(drain)
            # With an admin port, the API port serves an app without the LoRA admin routes.
            api_app, admin_app = (
                split_for_admin_port(app, lora_managed_on_admin_port, admin_auth(args, options))
                if admin_sock
                else (app, None)
            )
            settings = uvicorn_settings(args)
            early.stop()
            state.enter(Phase.READY)
            log.info("ready", extra={"startup_seconds": state.startup_seconds()})
            admin = AdminServer(admin_app, admin_sock, args, settings) if admin_sock else None
            try:
                # Returns once the server stopped.
                shutdown = await serve_api(api_app, sock, args, settings)
            finally:
                if admin:
                    await admin.stop()
            # vLLM's server also stops, with status 0, when the engine died (on a multi-node
            # replica: when another node's worker died); a drain shuts the engine down first.
            engine_died = engine.errored and state.phase != Phase.DRAINING
        try:
            await shutdown
        finally:
            sock.close()
            if admin_sock:
                admin_sock.close()
    if engine_died:
        raise ServerFailure("the engine died")


# The extension flags a worker tolerates and ignores: they shape the API the leader serves (a
# worker serves none: nothing reaches it but probes and scrapes), and the operator passes one
# argument list to both roles.
_LEADER_ONLY_OPTIONS = (
    "admin_port",
    "admin_token_public_key",
    "lora_allowed_roots",
    "orca_formats",
    "orca_grpc_port",
)


def run_worker(args: Namespace, options: Namespace, state: ServerState) -> None:
    """The worker role of a multi-node replica: this node's vLLM workers, no API. Ready once they
    joined the group and loaded their part of the model; a dead worker process ends it with
    `ServerFailure` (status 1: Kubernetes restarts the pod; vLLM's headless node exits 0)."""
    from .vllm_0_32.headless import run_headless_node

    ignored = [
        f"--{name.replace('_', '-')}" for name in _LEADER_ONLY_OPTIONS if getattr(options, name)
    ]
    if ignored:
        log.info("ignored on a worker (the leader serves the API)", extra={"flags": ignored})
    state.model = args.served_model_name[0] if args.served_model_name else args.model
    state.enter(Phase.LOADING_MODEL)
    log.info(
        "starting this node's workers",
        extra={"node_rank": args.node_rank, "nnodes": args.nnodes,
               "master": f"{args.master_addr}:{args.master_port}"},
    )  # fmt: skip

    def ready() -> None:
        state.enter(Phase.READY)
        log.info("ready", extra={"startup_seconds": state.startup_seconds()})

    try:
        worker_died = run_headless_node(args, ready)
    except SystemExit:
        # SIGTERM or SIGINT (vLLM's handlers): not ready while vLLM stops this node's workers
        # (on the way out of the interpreter, with its grace period).
        state.enter(Phase.DRAINING)
        log.info("stopping this node's workers")
        raise
    if worker_died:
        raise ServerFailure("a worker process of this node died")


def run(
    invocation: Invocation,
    *,
    sock: socket.socket,
    admin_sock: socket.socket | None,
    state: ServerState,
    early: EarlyServer,
) -> None:
    args = parse_vllm_args(invocation)
    if args.headless:
        run_worker(args, invocation.options, state)
        return
    uvloop.run(serve(args, invocation.options, sock, admin_sock, state, early))
