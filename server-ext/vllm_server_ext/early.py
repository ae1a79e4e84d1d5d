"""The small HTTP server that answers while vLLM is imported and the engine is built.

It runs in a thread on the listening socket the launcher bound first, so liveness answers within
a second of exec while the main thread spends tens of seconds (up to an hour on big models) in
imports and model loading. When vLLM's app is ready, `stop()` stops accepting without closing the
socket and the launcher hands the same socket to vLLM's uvicorn: connections that arrive in
between wait in the listen backlog, none is refused.

Standard library only (plus prometheus_client for `/metrics`), so it starts in milliseconds.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .lifecycle import Phase, ServerState, StateCollector

INSTANCE_HEADER = "vllm-instance-id"
LISTEN_BACKLOG = 2048  # uvicorn's default


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: nothing to hand over later

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header(INSTANCE_HEADER, self.server.state.instance_id)
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: object, extra: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", extra or {})

    def do_GET(self) -> None:
        state = self.server.state
        path = self.path.split("?", 1)[0]
        if path in ("/health", "/ping"):
            alive = state.phase != Phase.DEAD
            self._send(200 if alive else 503, b"", "text/plain", {})
        elif path == "/ready":
            self._json(503, state.describe())
        elif path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST, {})
        else:
            self._unavailable()

    do_HEAD = do_GET

    def _unavailable(self) -> None:
        state = self.server.state
        message = f"the server is starting (phase: {state.phase.value}); retry later"
        self._json(
            503,
            {"error": {"message": message, "type": "ServiceUnavailable", "code": 503}},
            {"Retry-After": "5"},
        )

    def do_POST(self) -> None:
        self._unavailable()

    do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_POST

    def log_message(self, format: str, *args: object) -> None:
        pass  # probes every few seconds would flood the log


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, sock: socket.socket, state: ServerState) -> None:
        from prometheus_client import CollectorRegistry

        super().__init__(("", 0), _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.state = state
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StateCollector(state))  # type: ignore[arg-type]

    def server_close(self) -> None:
        pass  # the socket outlives this server: vLLM's uvicorn serves it next


class EarlyServer:
    """Serves `/health`, `/ready` and `/metrics` on `sock` from a background thread."""

    def __init__(self, sock: socket.socket, state: ServerState) -> None:
        sock.listen(LISTEN_BACKLOG)
        self._server = _Server(sock, state)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="vllm-ext-early-http",
            daemon=True,
        )

    def start(self) -> EarlyServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting (pending connections stay queued on the socket) and wait for the
        accept loop to end. Requests already accepted finish in their own threads."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
