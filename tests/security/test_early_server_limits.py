"""The early server (answering while vLLM is imported) under a flood of half-sent requests: no
thread per connection, a deadline per connection, a cap on open connections, and probes still
answered at once."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import httpx
import pytest

from vllm_server_ext import early as early_module
from vllm_server_ext.early import EarlyServer
from vllm_server_ext.lifecycle import Phase, ServerState

HALF_SENT = 800


@pytest.fixture
def early():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    state = ServerState()
    state.enter(Phase.IMPORTING)
    threads_before = threading.active_count()
    server = EarlyServer(sock, state).start()
    yield sock.getsockname(), server, threads_before
    server.stop()
    sock.close()


def half_sent(address: tuple[str, int], count: int) -> list[socket.socket]:
    """`count` connections that each send a request line and one header, never the blank line."""
    out = []
    for _ in range(count):
        client = socket.create_connection(address, timeout=5)
        client.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        out.append(client)
    return out


def health_seconds(address: tuple[str, int]) -> float:
    start = time.monotonic()
    response = httpx.get(f"http://{address[0]}:{address[1]}/health", timeout=1.0)
    assert response.status_code == 200
    return time.monotonic() - start


def closed_by_server(client: socket.socket, within: float) -> bool:
    """Whether the server closes `client` (EOF or reset) within `within` seconds."""
    client.settimeout(within)
    try:
        return client.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_half_sent_requests_hold_no_threads_and_probes_still_answer(early):
    address, _, threads_before = early
    clients = half_sent(address, HALF_SENT)
    try:
        time.sleep(0.5)  # let the server accept them all
        assert threading.active_count() <= threads_before + 2
        assert health_seconds(address) < 1.0
        assert httpx.get(f"http://{address[0]}:{address[1]}/ready", timeout=1.0).status_code == 503
    finally:
        for client in clients:
            client.close()


def test_a_half_sent_request_is_closed_after_the_read_timeout(early):
    address, _, _ = early
    (client,) = half_sent(address, 1)
    with contextlib.closing(client):
        time.sleep(1.0)
        assert health_seconds(address) < 1.0  # one stalled client holds nothing up
        assert closed_by_server(client, within=8.0)  # the deadline is 5 s after accept


def test_a_request_trickled_byte_by_byte_is_closed_at_the_deadline_too(early):
    """The deadline is for the whole request, not for each read: a byte every second does not
    keep a connection open."""
    address, _, _ = early
    client = socket.create_connection(address, timeout=5)
    with contextlib.closing(client):
        start = time.monotonic()
        closed = False
        for byte in b"GET /health HTTP/1.0\r\nX-Slow: " + b"a" * 20:
            try:
                client.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            if closed_by_server(client, within=1.0):
                closed = True
                break
        assert closed
        assert time.monotonic() - start < 8.0


def test_open_connections_are_capped_oldest_first(early):
    address, _, _ = early
    cap = early_module.MAX_CONNECTIONS
    clients = half_sent(address, cap + 10)
    try:
        time.sleep(0.5)
        assert all(closed_by_server(c, within=1.0) for c in clients[:10])  # the oldest went first
        assert not closed_by_server(clients[-1], within=0.2)
        assert health_seconds(address) < 1.0
    finally:
        for client in clients:
            client.close()


def test_a_request_larger_than_the_header_limit_is_refused(early):
    address, _, _ = early
    with socket.create_connection(address, timeout=5) as client:
        client.sendall(b"GET /health HTTP/1.0\r\nX-Big: " + b"a" * 20000)
        reply = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := client.recv(4096):
                reply += chunk
    assert reply.startswith(b"HTTP/1.0 431")


def test_after_the_handover_half_sent_connections_end_and_no_thread_stays(early):
    """The issue's case: 800 half-sent requests kept 801 threads alive past the handover."""
    address, server, threads_before = early
    clients = half_sent(address, HALF_SENT)
    try:
        time.sleep(0.5)
        server.stop()
        deadline = time.monotonic() + 10
        while threading.active_count() > threads_before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert threading.active_count() <= threads_before
    finally:
        for client in clients:
            client.close()
