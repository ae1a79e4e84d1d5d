"""Routes and middleware this server adds to vLLM's app."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from .early import INSTANCE_HEADER
from .lifecycle import Phase, ServerState
from .load_tracker import LoadTracker
from .orca import FORMAT_REQUEST_HEADER, HEADER, choose_format

_FORMAT_REQUEST_HEADER = FORMAT_REQUEST_HEADER.encode()
_ORCA_HEADER = HEADER.encode()
# The OpenAI API surface: its responses carry ORCA reports and count towards the request rate.
API_PREFIX = "/v1/"

_NOT_ON_THIS_PORT = (
    b'{"error": {"message": "LoRA adapters are managed on the admin port", '
    b'"type": "NotFoundError", "code": 404}}'
)


async def lora_managed_on_admin_port(scope: Any, receive: Any, send: Any) -> None:
    """The API port's answer to a request for one of the LoRA admin routes, which its app does
    not have (`vllm_0_32.api.split_for_admin_port`): a 404 saying where they are."""
    headers = [(b"content-type", b"application/json")]
    headers.append((b"content-length", str(len(_NOT_ON_THIS_PORT)).encode()))
    await send({"type": "http.response.start", "status": 404, "headers": headers})
    await send({"type": "http.response.body", "body": _NOT_ON_THIS_PORT})


@dataclass(frozen=True)
class ServerExtension:
    """What the middleware and routes need, kept on `app.state.server_ext`."""

    state: ServerState
    tracker: LoadTracker
    orca_formats: tuple[str, ...]
    admin_port: int | None = None  # requests on that port are the operator's, not load

    @cached_property  # built once, appended to every response
    def instance_header(self) -> tuple[bytes, bytes]:
        return (INSTANCE_HEADER.encode(), self.state.instance_id.encode())


class ServerExtMiddleware:
    """Pure ASGI, so streaming responses pass through untouched. On every HTTP response: the
    instance id header; on OpenAI API responses, with ORCA on, one `endpoint-load-metrics`
    report (built from the shared snapshot) and the request counted for `rps_fractional`/`eps`.
    Requests on the admin port (the operator's) carry no report and are not counted as load.
    (The LoRA admin routes are kept off the API port by the app that port serves, which lacks
    them: see `vllm_0_32.api.split_for_admin_port`.)

    Added through vLLM's `--middleware` list (the app refuses middleware once built), which
    constructs it with the app alone; the rest comes from `app.state` at request time.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        ext: ServerExtension = scope["app"].state.server_ext
        extra = [ext.instance_header]
        on_admin_port = bool(ext.admin_port) and (
            (scope.get("server") or (None, None))[1] == ext.admin_port
        )
        api = ext.orca_formats and scope["path"].startswith(API_PREFIX) and not on_admin_port
        if api:
            requested = None
            for name, value in scope["headers"]:
                if name == _FORMAT_REQUEST_HEADER:
                    requested = value.decode("latin-1")
                    break
            fmt = choose_format(ext.orca_formats, requested)
        status = 0

        async def send_with_headers(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), *extra]
                if api:
                    # vLLM adds its own two-metric report when the request names a format:
                    # exactly one report goes out, ours.
                    headers = [h for h in headers if h[0].lower() != _ORCA_HEADER]
                    headers.append((_ORCA_HEADER, ext.tracker.header(fmt)))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except BaseException:
            status = 500
            raise
        finally:
            if api:
                ext.tracker.request_finished(status)


class EngineHealth(Protocol):
    """What readiness asks the engine (`vllm_0_32.api.Engine`)."""

    @property
    def errored(self) -> bool: ...

    @property
    def sleep_mode(self) -> bool: ...

    async def is_sleeping(self) -> bool: ...


async def current_phase(state: ServerState, engine: EngineHealth) -> Phase:
    """The live phase of a built server: draining and dead are final, sleeping comes and goes."""
    if state.phase in (Phase.DRAINING, Phase.DEAD):
        return state.phase
    if engine.errored:
        state.fail("the engine is dead")
        return Phase.DEAD
    if engine.sleep_mode:  # else the engine cannot sleep: not worth asking it
        state.enter(Phase.SLEEPING if await engine.is_sleeping() else Phase.READY)
    return state.phase


def attach_routes(app: FastAPI, ext: ServerExtension, engine: EngineHealth) -> None:
    """`GET /ready` (200 when requests can be served, else 503; the body names the phase) and,
    with ORCA on, `GET|HEAD /orca` (ORCA's HTTP out-of-band form: the report in the header)."""
    app.state.server_ext = ext

    async def ready() -> JSONResponse:
        phase = await current_phase(ext.state, engine)
        body = ext.state.describe() | {"phase": phase.value, "ready": phase == Phase.READY}
        return JSONResponse(body, status_code=200 if phase == Phase.READY else 503)

    app.add_api_route("/ready", ready, methods=["GET", "HEAD"], include_in_schema=False)

    if ext.orca_formats:

        async def orca(request: Request) -> Response:
            fmt = choose_format(ext.orca_formats, request.headers.get(FORMAT_REQUEST_HEADER))
            return Response(headers={HEADER: ext.tracker.header(fmt).decode("ascii")})

        app.add_api_route("/orca", orca, methods=["GET", "HEAD"], include_in_schema=False)
