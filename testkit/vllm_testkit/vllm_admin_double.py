"""A test double of `vllm-ext-serve`'s admin port: the LoRA API the operator calls.

It answers `GET /v1/models` (adapters with their `root` and `parent`, the `vllm-instance-id`
header), `POST /v1/load_lora_adapter` and `POST /v1/unload_lora_adapter` the way vLLM 0.32 does
(the answers the real-server tests saw: an already-loaded name is a 400 unless `load_inplace`,
an unknown unload a 404, errors in vLLM's `{"error": {...}}` form), for several pod addresses on
one port, from a thread. Each address is one "server": it can be made to refuse a path, stop
serving, or restart (a new instance id, its adapters gone). The slow `vllm` tests are the proof
against the real server; this one lets the operator's LoRA logic run in the fast suite. It also
answers `GET /ready` with the body a test sets (`FakeServer.ready`: a starting server's phase and
its model download, as vllm-ext-serve's early server writes it), without a token as the server.

Given an `audience`, it checks every call's operator token as the server does (the server's own
`AdminTokenVerifier`, with the test kit's admin key unless told another): a call without a
valid one gets the server's 401 and is recorded as `("refused", reason)`.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from vllm_server_ext.admin_auth import AdminTokenVerifier, parse_public_key

from .admin_key import PUBLIC_KEY

BASE_MODEL = "tiny-llama"


@dataclass
class FakeServer:
    """One address: what it holds and how it behaves."""

    instance: str = field(default_factory=lambda: uuid.uuid4().hex)
    adapters: dict[str, str] = field(default_factory=dict)  # name -> path
    serving: bool = True
    refuse: dict[str, tuple[int, str]] = field(default_factory=dict)  # path -> (status, message)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (load|unload|models, name)
    # `/ready`'s body (a starting server's phase, its download), or None: not answered (404).
    ready: dict[str, Any] | None = None


class VLLMAdminDouble:
    def __init__(
        self,
        hosts: list[str],
        port: int,
        *,
        load_seconds: float = 0.0,
        audience: str | None = None,
        public_key: str = PUBLIC_KEY,
    ) -> None:
        self.port, self.load_seconds = port, load_seconds
        self.verifier = (
            AdminTokenVerifier(parse_public_key(public_key), audience) if audience else None
        )
        self.servers = {host: FakeServer() for host in hosts}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the admin double did not start")

    @property
    def models_calls(self) -> int:
        """`/v1/models` calls over all addresses (one per pod per adapter reconcile)."""
        return sum(kind == "models" for server in self.servers.values() for kind, _ in server.calls)

    def restart(self, host: str) -> None:
        """The server at `host` restarted: a new instance, no adapters (its refusals stay)."""
        old = self.servers[host]
        self.servers[host] = FakeServer(refuse=old.refuse)

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        app = web.Application(middlewares=[self._check_token])
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/load_lora_adapter", self._load)
        app.router.add_post("/v1/unload_lora_adapter", self._unload)
        app.router.add_get("/ready", self._startup)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for host in self.servers:
            await web.TCPSite(runner, host, self.port).start()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    @web.middleware
    async def _check_token(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.verifier is not None and request.path != "/ready":  # the probes' route: open
            reason = self.verifier.refusal(request.headers.get("Authorization"))
            if reason is not None:
                self._server(request).calls.append(("refused", reason))
                return _error(401, reason, "Unauthorized")
        return await handler(request)

    def _server(self, request: web.Request) -> FakeServer:
        host = request.transport.get_extra_info("sockname")[0]  # type: ignore[union-attr]
        return self.servers[host]

    async def _models(self, request: web.Request) -> web.Response:
        server = self._server(request)
        server.calls.append(("models", ""))
        if not server.serving:
            return _error(503, "the server is not ready")
        data = [{"id": BASE_MODEL, "root": "/models/tiny", "parent": None}]
        data += [{"id": n, "root": p, "parent": BASE_MODEL} for n, p in server.adapters.items()]
        headers = {"vllm-instance-id": server.instance}
        return web.json_response({"object": "list", "data": data}, headers=headers)

    async def _startup(self, request: web.Request) -> web.Response:
        """A starting server's `/ready`: 503 with its body (200 once it says it is ready)."""
        server = self._server(request)
        server.calls.append(("ready", ""))
        if server.ready is None:
            return _error(404, "no /ready here")
        return web.json_response(server.ready, status=200 if server.ready.get("ready") else 503)

    async def _load(self, request: web.Request) -> web.Response:
        server, body = self._server(request), await request.json()
        name, path = body["lora_name"], body["lora_path"]
        server.calls.append(("load", name))
        await asyncio.sleep(self.load_seconds)
        if path in server.refuse:
            return _error(*server.refuse[path])
        if name in server.adapters and not body.get("load_inplace"):
            return _error(
                400,
                f"The lora adapter '{name}' has already been loaded. If you want to load the "
                "adapter in place, set 'load_inplace' to True.",
                "InvalidUserInput",
            )
        server.adapters[name] = path
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def _unload(self, request: web.Request) -> web.Response:
        server, body = self._server(request), await request.json()
        name = body["lora_name"]
        server.calls.append(("unload", name))
        if server.adapters.pop(name, None) is None:
            return _error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")


def _error(status: int, message: str, kind: str = "BadRequestError") -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": status}},
        status=status,
    )
