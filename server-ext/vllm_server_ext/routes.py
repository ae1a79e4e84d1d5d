"""Routes and middleware this server adds to vLLM's app."""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from .early import INSTANCE_HEADER
from .state import INSTANCE_ID_ENV, Phase, ServerState


class InstanceIdMiddleware:
    """Pure ASGI: adds the instance id header to every HTTP response, streaming ones too.

    Added through vLLM's `--middleware` list (the app refuses middleware once built), which
    constructs it with no arguments: the id comes from the environment the launcher set."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.header = (INSTANCE_HEADER.encode(), os.environ[INSTANCE_ID_ENV].encode())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_header(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), self.header]
            await send(message)

        await self.app(scope, receive, send_with_header)


async def current_phase(state: ServerState, engine_client: Any, can_sleep: bool) -> Phase:
    """The live phase of a built server: draining and dead are final, sleeping comes and goes."""
    if state.phase in (Phase.DRAINING, Phase.DEAD):
        return state.phase
    if engine_client.errored:
        state.fail("the engine is dead")
        return Phase.DEAD
    if can_sleep:
        state.enter(Phase.SLEEPING if await engine_client.is_sleeping() else Phase.READY)
    return state.phase


def attach_lifecycle_routes(app: FastAPI, state: ServerState, *, can_sleep: bool) -> None:
    """`GET /ready`: 200 when requests can be served, else 503; the body names the phase."""

    async def ready(request: Request) -> JSONResponse:
        phase = await current_phase(state, request.app.state.engine_client, can_sleep)
        body = state.describe() | {"phase": phase.value, "ready": phase == Phase.READY}
        return JSONResponse(body, status_code=200 if phase == Phase.READY else 503)

    app.add_api_route("/ready", ready, methods=["GET", "HEAD"], include_in_schema=False)
