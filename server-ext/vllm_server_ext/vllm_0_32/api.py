"""Everything the API process uses of vLLM: the launcher's steps (vLLM's own `setup_server` and
`run_server_worker` pieces, with room for our hooks between them, and their log lines, so the
log reads as `vllm serve`'s), the `Engine` facade, vLLM's app and its HTTP servers.

Imported by `launcher` only, once the early server answers. The three modules that build vLLM's
app take ~0.3 s to import and are imported where they are used, after the arguments are checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import socket
from argparse import Namespace
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import uvicorn
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
from vllm.entrypoints.serve.engine.protocol import ErrorInfo, ErrorResponse
from vllm.entrypoints.serve.utils.api_utils import (
    cli_env_setup,
    log_non_default_args,
    log_version_and_model,
)
from vllm.logger import configure_logging_from_args, init_logger
from vllm.reasoning import ReasoningParserManager
from vllm.tool_parsers import ToolParserManager
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.utils.network_utils import is_valid_ipv6_address
from vllm.utils.system_utils import set_ulimit
from vllm.v1.engine.output_processor import OutputProcessor
from vllm.v1.metrics.loggers import AggregateStatLoggerBase
from vllm.version import __version__ as VLLM_VERSION

from ..load_tracker import EngineLoad, LoadTracker
from ..logs import log
from ..token_load import TokenLoad

if TYPE_CHECKING:
    from fastapi import FastAPI
    from vllm.v1.engine.async_llm import AsyncLLM

# The lines vLLM's `setup_server` and `build_and_serve` log, logged here in their place by the
# same loggers, so that the log reads as `vllm serve`'s.
_setup_logger = init_logger(validate_api_server_args.__module__)
_serve_logger = init_logger("vllm.entrypoints.launchers.api_server.entry")


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
    was bound long before): log vLLM's version and the model, and the non-default arguments;
    import the tool and reasoning parser plugins (so their names pass the check), check the API
    server's arguments, raise the open-files limit."""
    log_version_and_model(_setup_logger, VLLM_VERSION, args.model)
    log_non_default_args(args)
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
        result = super()._update_stats_from_output(req_state, engine_core_output, *args)
        if engine_core_output.new_token_ids:
            # vLLM's own prefill interval (engine timestamps, just updated from this output's
            # events): first scheduled to first token.
            stats, prefill = req_state.stats, None
            if stats is not None and stats.scheduled_ts and stats.first_token_ts:
                prefill = stats.first_token_ts - stats.scheduled_ts
            self.token_load.generated(
                req_state.request_id, len(engine_core_output.new_token_ids), prefill
            )
        return result

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

    _serve_logger.info("Supported tasks: %s", engine.supported_tasks)
    args.middleware = [*args.middleware, f"{middleware.__module__}.{middleware.__qualname__}"]
    return build_app(args, engine.supported_tasks, engine._client.model_config)  # type: ignore[arg-type]


async def init_api_state(engine: Engine, app: FastAPI, args: Namespace) -> None:
    """vLLM's handlers on `app.state` (models, completions, chat, ...)."""
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state

    await init_app_state(engine._client, app.state, args, engine.supported_tasks)  # type: ignore[arg-type]


def check_lora_loads(app: FastAPI, check: Callable[[str, str], str | None]) -> None:
    """Before vLLM asks the engine to load a LoRA adapter, `check(name, path)`: a message
    refuses the load with a 400 carrying it (in vLLM's error format, but as written: vLLM's
    `create_error_response` would replace the paths in it, the allowed roots included, with
    `<path>`; ours name only what the caller sent and the server's settings)."""
    models = app.state.openai_serving_models
    load = models.load_lora_adapter

    async def load_lora_adapter(request: Any, base_model_name: str | None = None) -> Any:
        error = check(request.lora_name, request.lora_path)
        if error is not None:
            info = ErrorInfo(
                message=error, type="BadRequestError", code=HTTPStatus.BAD_REQUEST.value
            )
            return ErrorResponse(error=info)
        return await load(request, base_model_name)

    models.load_lora_adapter = load_lora_adapter


def restrict_lora_resolvers(
    app: FastAPI, check: Callable[[str, str], str | None], *, off: bool
) -> None:
    """vLLM's LoRA resolvers (the filesystem one under `VLLM_LORA_RESOLVER_CACHE_DIR`, plugins
    such as `lora_hf_hub_resolver`) load the adapter a completion request names as its `model`,
    for any API client: `OpenAIServingModels.resolve_lora` asks the engine itself, so the
    checks of `check_lora_loads` never see it.

    `off` (with an admin port: adapters are the operator's to load, there): the resolvers are
    dropped, so none runs at all (the hub resolver would download what a client names before any
    check could see its path; the filesystem one joins its directory with the name as given,
    `/abs` or `../x` included), and an unknown `model` is a 404, as without resolvers. Else
    (`vllm serve`'s semantics), each resolver's adapter goes through `check` first: a refused one
    is not found (a 404), the reason logged."""
    models = app.state.openai_serving_models
    resolvers = list(models.lora_resolvers)
    if not resolvers:
        return
    names = [type(resolver).__name__ for resolver in resolvers]
    if off:
        models.lora_resolvers = []
        log.info(
            "vLLM's LoRA resolvers are off: with an admin port, adapters are loaded there only",
            extra={"resolvers": names},
        )
    else:
        models.lora_resolvers = [CheckedLoRAResolver(r, check) for r in resolvers]
        log.info(
            "vLLM's LoRA resolvers load only adapters that pass the LoRA load checks",
            extra={"resolvers": names},
        )


class CheckedLoRAResolver:
    """A vLLM LoRA resolver whose adapters go through `check(name, path)`: a refused one is
    not resolved (vLLM answers 404), the reason logged."""

    def __init__(self, resolver: Any, check: Callable[[str, str], str | None]) -> None:
        self.resolver = resolver
        self.check = check

    async def resolve_lora(self, base_model_name: str, lora_name: str) -> Any:
        request = await self.resolver.resolve_lora(base_model_name, lora_name)
        if request is None:
            return None
        error = self.check(lora_name, request.lora_path)
        if error is not None:
            log.warning("LoRA resolver's adapter refused", extra={"reason": error})
            return None
        return request


# --- the API port without the LoRA admin routes ------------------------------------------------

# The requests that must find no route on the API port's app (checked once, at startup).
_LORA_ADMIN_REQUESTS = (
    ("POST", "/v1/load_lora_adapter"),
    ("POST", "/v1/unload_lora_adapter"),
    ("POST", "/adapters"),  # SageMaker's, mounted by vLLM on the same handlers
    ("DELETE", "/adapters/x"),
)


def _lora_endpoints() -> frozenset[Callable[..., Any]]:
    """vLLM's runtime LoRA endpoint functions (`/v1/load_lora_adapter`,
    `/v1/unload_lora_adapter`), as its LoRA router declares them."""
    from vllm.entrypoints.serve.lora.api_router import router

    return frozenset(getattr(route, "endpoint", None) for route in router.routes) - {None}


def _wraps(function: Any, targets: frozenset[Callable[..., Any]]) -> bool:
    """Whether `function` is one of `targets` or wraps one: through `__wrapped__`
    (functools.wraps) or its closure (SageMaker's transform decorator keeps vLLM's handler in
    the closure of the function it mounts as `POST /adapters` and `DELETE /adapters/{name}`)."""
    wanted = {id(f) for f in targets}
    seen: set[int] = set()
    todo = [function]
    while todo and len(seen) < 10_000:  # a bound, for callables that make attributes up
        f = todo.pop()
        if id(f) in seen or not callable(f):
            continue
        seen.add(id(f))
        if id(f) in wanted:
            return True
        todo.append(getattr(f, "__wrapped__", None))
        for cell in getattr(f, "__closure__", None) or ():
            with contextlib.suppress(ValueError):  # an empty cell
                todo.append(cell.cell_contents)
    return False


def lora_admin_routes(app: FastAPI) -> list[Any]:
    """The route objects of `app` that serve vLLM's runtime LoRA endpoints, under whatever path:
    vLLM's own and SageMaker's, which call them."""
    endpoints = _lora_endpoints()
    return [r for r in app.router.routes if _wraps(getattr(r, "endpoint", None), endpoints)]


def _route_for(routes: Sequence[Any], method: str, path: str) -> Any:
    """The first of `routes` that Starlette's routing would pick for `method path` (also for
    another method: a 405 is still that route's), or None."""
    from starlette.routing import Match

    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    for route in routes:
        if route.matches(scope)[0] is not Match.NONE:
            return route
    return None


def split_for_admin_port(
    app: FastAPI,
    refuse: Callable[..., Awaitable[None]],
    auth: Callable[[Any], Any] | None = None,
) -> tuple[Any, Any]:
    """Two apps over vLLM's built `app`, sharing its state, handlers and exception handlers:
    (for the API port, for the admin port).

    The API port's is `app` itself, its routes less the LoRA admin routes, found by their
    endpoint functions, not by paths: whatever Starlette's routing would send there (under any
    `--root-path`, encoding or request-target form) finds no route. A request that one of them
    would have matched is answered by the ASGI app `refuse`, any other unmatched one as vLLM
    answers it. The admin port's is a copy of `app` with every route and its own middleware
    stack, less vLLM's HTTP request metrics (the operator's calls are not load, and a second
    instance of that middleware would register the same metrics again). With `auth` (a pure
    ASGI middleware taking the app: the operator's token check), the admin app is wrapped in it,
    outermost, and vLLM's `--api-key` check is left off it: the users' API keys guard the API
    port, the operator's credential the admin port. Call once every route is added; raises if a
    LoRA admin route would still be served on the API port.
    """
    from prometheus_fastapi_instrumentator.middleware import PrometheusInstrumentatorMiddleware
    from starlette.middleware import Middleware
    from starlette.routing import Match
    from vllm.entrypoints.serve.middleware.authenticate import AuthenticationMiddleware

    router = app.router
    if router.middleware_stack != router.app:
        raise RuntimeError("vLLM's router has middleware of its own: not supported")
    admin_router = copy.copy(router)
    admin_router.routes = list(router.routes)
    admin_router.middleware_stack = admin_router.app  # the copy's routes, not the original's
    admin = copy.copy(app)  # the same `app.state`
    admin.router = admin_router
    left_off: set[type] = {PrometheusInstrumentatorMiddleware}
    if auth is not None:
        left_off.add(AuthenticationMiddleware)
    admin.user_middleware = [m for m in app.user_middleware if m.cls not in left_off]
    if auth is not None:
        admin.user_middleware.insert(0, Middleware(auth))
    admin.middleware_stack = admin.build_middleware_stack()

    # `app` keeps its router object, changed in place: its middleware stack (which SageMaker's
    # bootstrap has built already) wraps that object.
    lora = lora_admin_routes(app)
    router.routes = [r for r in router.routes if all(r is not x for x in lora)]
    not_found = router.default

    async def refuse_lora_route(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and any(r.matches(scope)[0] is not Match.NONE for r in lora):
            await refuse(scope, receive, send)
        else:
            await not_found(scope, receive, send)

    router.default = refuse_lora_route
    for method, path in _LORA_ADMIN_REQUESTS:
        if (route := _route_for(router.routes, method, path)) is not None:
            raise RuntimeError(
                f"cannot keep the LoRA admin routes off the API port: {method} {path} would be "
                f"served there by {getattr(route, 'endpoint', route)!r}"
            )
    return app, admin


# --- HTTP ------------------------------------------------------------------------------------


def listen_address(args: Namespace) -> str:
    """Where the API is served, worded as vLLM's `setup_server` words it."""
    if args.uds:
        return f"unix:{args.uds}"
    host = args.host or ""
    scheme = "https" if args.ssl_keyfile and args.ssl_certfile else "http"
    host_part = f"[{host}]" if is_valid_ipv6_address(host) else host or "0.0.0.0"
    return f"{scheme}://{host_part}:{args.port}"


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
    _serve_logger.info("Starting vLLM server on %s", listen_address(args))
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
