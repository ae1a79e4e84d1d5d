"""Slow, pausable, counted byte streams for download tests: `Pacer`, a byte budget shared by
every stream that draws on it, and `ThrottledProxy`, a TCP proxy on 127.0.0.1 whose
server-to-client bytes draw on one (the Hub stand-in paces its file bodies with another).

A real link is not modelled: no latency, no loss; the budget is a rate and nothing else.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

MAX_CHUNK = 64 * 1024


class Pacer:
    """`rate` bytes per second across all the streams that wait on it (None: unlimited),
    settable at any time; `pause()` holds every stream before its next chunk until `resume()`."""

    def __init__(self, rate: float | None = None) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._free_at = 0.0  # when the budget given out so far is spent
        self._flowing = threading.Event()
        self._flowing.set()

    def chunk_size(self) -> int:
        """How many bytes to send at once: about a tenth of a second's worth when throttled, so a
        rate change or a pause takes effect soon and progress is seen in small steps."""
        rate = self.rate
        return MAX_CHUNK if rate is None else max(1024, min(MAX_CHUNK, int(rate / 10)))

    def wait(self, nbytes: int) -> None:
        """Block until `nbytes` more may go: streams take turns at the shared rate, so N bytes
        through the pacer take at least N / rate seconds, however many streams share it."""
        self._flowing.wait()
        rate = self.rate
        if rate is None:
            return
        with self._lock:
            now = time.monotonic()
            self._free_at = max(now, self._free_at) + nbytes / rate
            until = self._free_at
        time.sleep(max(0.0, until - now))

    def pause(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()


class ThrottledProxy:
    """Forwards each connection to 127.0.0.1:`port` on to 127.0.0.1:`target_port`: client-to-server
    bytes as they come, server-to-client bytes at `rate` bytes/s (shared by all connections),
    counted in `bytes_down` (headers included: whatever the server sends)."""

    def __init__(self, target_port: int, rate: float | None = None) -> None:
        self.target_port = target_port
        self.pacer = Pacer(rate)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._bytes_down = 0
        self._sockets: set[socket.socket] = set()
        self._closed = False

    @property
    def rate(self) -> float | None:
        return self.pacer.rate

    @rate.setter
    def rate(self, value: float | None) -> None:
        self.pacer.rate = value

    @property
    def bytes_down(self) -> int:
        with self._lock:
            return self._bytes_down

    def start(self) -> ThrottledProxy:
        threading.Thread(target=self._accept, name="throttled-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the listener and every open connection (a paused stream ends too)."""
        with self._lock:
            self._closed = True
            sockets, self._sockets = list(self._sockets), set()
        for sock in [self._listener, *sockets]:
            _close(sock)
        self.pacer.resume()

    def __enter__(self) -> ThrottledProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # stop() shut the listener
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:  # the server is gone: the client sees its connection closed
                client.close()
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, down: bool) -> None:
        try:
            while data := src.recv(self.pacer.chunk_size() if down else MAX_CHUNK):
                if down:
                    self.pacer.wait(len(data))
                    with self._lock:  # before it goes: what a client has is counted already
                        self._bytes_down += len(data)
                dst.sendall(data)
        except OSError:  # either side reset, or stop() closed the sockets
            pass
        if down:  # the server is done: end the connection both ways, as a direct one would
            for sock in (src, dst):
                self._forget(sock)
        else:  # the client sent all it will: pass its EOF on, let the answer finish
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def _forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        _close(sock)


def _close(sock: socket.socket) -> None:
    """Close a socket another thread may be blocked on: shutdown() wakes that thread's recv() or
    accept(), which close() alone does not."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
