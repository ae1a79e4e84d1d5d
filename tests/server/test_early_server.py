"""The early server: what it answers while vLLM loads, and the hand-over of its socket."""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from vllm_server_ext.early import INSTANCE_HEADER, EarlyServer
from vllm_server_ext.lifecycle import Phase, ServerState


@pytest.fixture
def early():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    state = ServerState()
    state.enter(Phase.IMPORTING)
    server = EarlyServer(sock, state).start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    yield url, state, server, sock
    server.stop()
    sock.close()


def test_liveness_readiness_and_metrics_while_starting(early):
    url, state, _, _ = early
    health = httpx.get(f"{url}/health")
    assert health.status_code == 200
    assert health.headers[INSTANCE_HEADER] == state.instance_id
    ready = httpx.get(f"{url}/ready")
    assert ready.status_code == 503
    assert ready.json()["phase"] == "importing"
    assert ready.json()["instance_id"] == state.instance_id
    metrics = httpx.get(f"{url}/metrics")
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    current = [s.labels["phase"] for s in families["vllm:server_phase"].samples if s.value == 1]
    assert current == ["importing"]
    assert httpx.head(f"{url}/health").status_code == 200


def test_api_routes_answer_503_with_retry_after(early):
    url, *_ = early
    response = httpx.post(f"{url}/v1/completions", json={"prompt": "hi"})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "starting (phase: importing)" in response.json()["error"]["message"]


def test_liveness_fails_once_startup_failed(early):
    url, state, _, _ = early
    state.fail("engine failed to start")
    assert httpx.get(f"{url}/health").status_code == 503
    assert httpx.get(f"{url}/ready").json()["error"] == "engine failed to start"


def test_handover_queues_connections_instead_of_refusing_them(early):
    _, _, server, sock = early
    server.stop()
    # Nobody accepts now: a new connection must wait in the backlog, not be refused.
    client = socket.create_connection(sock.getsockname(), timeout=5)
    client.sendall(b"GET /health HTTP/1.0\r\n\r\n")

    class Next(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"server": "next"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    successor = HTTPServer(("", 0), Next, bind_and_activate=False)
    successor.socket.close()
    successor.socket = sock
    thread = threading.Thread(target=successor.handle_request)
    thread.start()
    reply = b""
    while chunk := client.recv(4096):
        reply += chunk
    thread.join()
    client.close()
    assert reply.startswith(b"HTTP/1.0 200")
    assert reply.endswith(b'{"server": "next"}')


def test_a_multi_node_worker_is_ready_on_the_early_server_and_serves_no_api(early):
    """On a worker (`--headless`) the early server serves for the process's life: /ready turns
    200 with the phase, API routes are a 404 naming the leader."""
    url, state, _, _ = early
    state.worker = True
    assert httpx.get(f"{url}/ready").status_code == 503
    state.enter(Phase.JOINING_GROUP)
    assert httpx.get(f"{url}/ready").json()["phase"] == "joining_group"
    state.enter(Phase.READY)
    ready = httpx.get(f"{url}/ready")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True and ready.json()["role"] == "worker"
    api = httpx.post(f"{url}/v1/completions", json={"prompt": "hi"})
    assert api.status_code == 404
    assert "send requests to its leader" in api.json()["error"]["message"]
    assert httpx.get(f"{url}/health").status_code == 200
    state.fail("a worker process of this node died")
    assert httpx.get(f"{url}/health").status_code == 503
