"""The small HTTP server that answers while vLLM is imported and the engine is built.

It runs in a thread on the listening socket the launcher bound first, so liveness answers within
a second of exec while the main thread spends tens of seconds (up to an hour on big models) in
imports and model loading. When vLLM's app is ready, `stop()` stops accepting without closing the
socket and the launcher hands the same socket to vLLM's uvicorn: connections that arrive in
between wait in the listen backlog, none is refused.

One thread serves every connection (a selector loop, non-blocking sockets): a client that sends
half a request, or reads no answer, costs a file descriptor and a buffer, never a thread. Each
connection has `read_timeout` seconds in all to send its request and read the answer; at most
`max_connections` are open at once, and a new one beyond that closes the oldest (a probe arrives
and is answered in milliseconds: a flood of idle connections does not keep it waiting).

Standard library only (plus prometheus_client for `/metrics`), so it starts in milliseconds.
"""

from __future__ import annotations

import contextlib
import io
import json
import selectors
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from .lifecycle import Phase, ServerState, StateCollector
from .logs import log

INSTANCE_HEADER = "vllm-instance-id"
LISTEN_BACKLOG = 2048  # uvicorn's default
READ_TIMEOUT = 5.0  # seconds a connection has to send its request and read the answer
MAX_CONNECTIONS = 256  # open at once; a new one beyond closes the oldest
MAX_REQUEST_BYTES = 16384  # request line and headers (bodies are never read)
_TOO_LARGE = (
    b"HTTP/1.0 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)


class _Handler(BaseHTTPRequestHandler):
    """Answers one request already read into memory (`request`: its bytes), into `wfile` (a
    buffer the loop sends): parsing and errors are `http.server`'s."""

    server: _Server  # type: ignore[assignment]
    protocol_version = "HTTP/1.0"  # one request per connection: nothing to hand over later

    def setup(self) -> None:
        self.rfile = io.BytesIO(self.request)  # type: ignore[arg-type]
        self.wfile = io.BytesIO()

    def finish(self) -> None:
        pass

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
            # Ready here only on a multi-node worker, whose early server serves it for life.
            self._json(200 if state.ready else 503, state.describe())
        elif path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST, {})
        else:
            self._unavailable()

    do_HEAD = do_GET

    def _unavailable(self) -> None:
        state = self.server.state
        if state.worker:
            message = "a multi-node worker serves no API: send requests to its leader"
            self._json(404, {"error": {"message": message, "type": "NotFoundError", "code": 404}})
            return
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


class _Connection:
    """One accepted connection: reading its request, then sending the answer, then draining
    what the client still sends until it closes (so that closing sends no reset over the
    answer)."""

    def __init__(self, sock: socket.socket, address: Any, deadline: float) -> None:
        self.sock = sock
        self.address = address
        self.deadline = deadline
        self.received = bytearray()
        self.answer = b""
        self.sent = 0
        self.phase = "reading"  # then "sending", then "draining"


class _Server:
    """The selector loop: the listening socket until `stop_accepting`, every connection until it
    is answered, closed by its client or out of time."""

    def __init__(
        self, sock: socket.socket, state: ServerState, read_timeout: float, max_connections: int
    ) -> None:
        from prometheus_client import CollectorRegistry

        self.socket = sock
        self.state = state
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StateCollector(state))  # type: ignore[arg-type]
        self._connections: dict[socket.socket, _Connection] = {}  # oldest first
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        self._listening = False
        self._stop_asked = threading.Event()
        self.stopped_accepting = threading.Event()

    # --- control, from other threads ---

    def stop_accepting(self) -> None:
        self._stop_asked.set()
        with contextlib.suppress(OSError):  # else the loop has ended: it accepts nothing
            self._wake_write.send(b"x")

    # --- the loop ---

    def serve(self) -> None:
        self._listen_timeout = self.socket.gettimeout()
        self.socket.setblocking(False)
        self._selector.register(self.socket, selectors.EVENT_READ)
        self._listening = True
        try:
            while self._listening or self._connections:
                timeout = 0.5
                if self._connections:
                    oldest = next(iter(self._connections.values()))
                    timeout = min(timeout, max(0.0, oldest.deadline - time.monotonic()))
                for key, events in self._selector.select(timeout):
                    if key.fileobj is self._wake_read:
                        self._drain_wakeups()
                    elif key.fileobj is self.socket:
                        self._accept()
                    else:
                        self._serve(key.fileobj, events)  # type: ignore[arg-type]
                if self._stop_asked.is_set() and self._listening:
                    self._stop_listening()
                self._expire()
        finally:
            if self._listening:
                self._stop_listening()
            for conn in list(self._connections.values()):
                self._close(conn)
            self._selector.close()
            self._wake_read.close()
            self._wake_write.close()

    def _stop_listening(self) -> None:
        # The socket stays open and listening: connections wait in its backlog for uvicorn.
        self._selector.unregister(self.socket)
        self.socket.settimeout(self._listen_timeout)
        self._listening = False
        self.stopped_accepting.set()

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._wake_read.recv(64)

    def _accept(self) -> None:
        for _ in range(64):  # then look at the connections already open
            if self._stop_asked.is_set():
                return
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of file descriptors, an aborted connection...
                log.warning("early server: accept failed", extra={"error": str(e)})
                return
            sock.setblocking(False)
            conn = _Connection(sock, address, time.monotonic() + self.read_timeout)
            self._connections[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ)
            while len(self._connections) > self.max_connections:
                self._close(next(iter(self._connections.values())))

    def _serve(self, sock: socket.socket, events: int) -> None:
        conn = self._connections.get(sock)
        if conn is None:
            return
        try:
            if conn.phase == "sending":
                self._send(conn)
            else:
                self._receive(conn)
        except OSError:  # reset by the client, ...
            self._close(conn)
        except Exception:
            log.exception("early server: request failed")
            self._close(conn)

    def _receive(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        if not data:
            self._close(conn)  # the client is gone, or done with the answer
            return
        if conn.phase == "draining":
            return
        start = max(0, len(conn.received) - 3)
        conn.received += data
        end = _end_of_headers(conn.received, start)
        if end is not None:
            conn.answer = self._answer(bytes(conn.received[:end]), conn.address)
        elif len(conn.received) > MAX_REQUEST_BYTES:
            conn.answer = _TOO_LARGE
        else:
            return
        conn.received = bytearray()
        conn.phase = "sending"
        self._selector.modify(conn.sock, selectors.EVENT_WRITE)
        self._send(conn)

    def _answer(self, request: bytes, address: Any) -> bytes:
        handler = _Handler(request, address, self)  # type: ignore[arg-type]
        return handler.wfile.getvalue()  # type: ignore[attr-defined]

    def _send(self, conn: _Connection) -> None:
        try:
            conn.sent += conn.sock.send(conn.answer[conn.sent :])
        except BlockingIOError:
            return
        if conn.sent < len(conn.answer):
            return
        conn.sock.shutdown(socket.SHUT_WR)
        conn.phase = "draining"
        self._selector.modify(conn.sock, selectors.EVENT_READ)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._connections:
            oldest = next(iter(self._connections.values()))
            if oldest.deadline > now:
                return
            self._close(oldest)

    def _close(self, conn: _Connection) -> None:
        self._connections.pop(conn.sock, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        conn.sock.close()


def _end_of_headers(data: bytearray, start: int) -> int | None:
    """Where the request's header block ends in `data` (after its blank line), if it does;
    `start`: where to look from."""
    for mark in (b"\r\n\r\n", b"\n\n"):
        at = data.find(mark, start)
        if at >= 0:
            return at + len(mark)
    return None


class EarlyServer:
    """Serves `/health`, `/ready` and `/metrics` on `sock` from a background thread: until
    vLLM's app takes the socket over, or, on a multi-node worker (`--headless`), which serves no
    API, for the whole life of the process."""

    def __init__(
        self,
        sock: socket.socket,
        state: ServerState,
        *,
        read_timeout: float = READ_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        sock.listen(LISTEN_BACKLOG)
        self._server = _Server(sock, state, read_timeout, max_connections)
        self._thread = threading.Thread(
            target=self._server.serve, name="vllm-ext-early-http", daemon=True
        )

    def start(self) -> EarlyServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting (pending connections stay queued on the socket) and wait until the
        loop no longer accepts. Connections already accepted are still answered (or time out)
        in the background."""
        if self._thread.is_alive():
            self._server.stop_accepting()
            while not self._server.stopped_accepting.wait(0.1):
                if not self._thread.is_alive():
                    break
