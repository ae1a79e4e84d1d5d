"""A two-node replica on loopback (tensor parallelism 2, vLLM's multi-node mode without Ray): a
leader `vllm-ext-serve` (node 0, the API) and a worker `vllm-ext-serve --headless` (node 1, its
vLLM worker only). The worker is alive at once, ready with its phases once its vLLM worker
joined the group and loaded its half of the model; the leader serves; a dead vLLM worker ends
the worker process with a failure status, and the leader, once its next request finds the peer
gone, leaves ready and exits with a failure status too (`vllm serve` exits 0 in both cases).

Each process binds its own CPU (this box has two). Slow: ~75 s to ready on an idle box."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from vllm_testkit.servers import SERVED_NAME, ext_server, free_port

pytestmark = pytest.mark.vllm

STARTUP_TIMEOUT = 300.0  # both nodes ready (~75 s idle; the CI box is shared and noisy)
EXIT_TIMEOUT = 60.0  # a dead peer noticed and the process gone


def wait_for(what: str, check: Callable[[], object], timeout: float, every: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(every)
    pytest.fail(f"{what}: not within {timeout} s")


def get(client: httpx.Client, url: str) -> httpx.Response | None:
    try:
        return client.get(url)
    except httpx.TransportError:
        return None


def current_phase(metrics: str) -> list[str]:
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    return [s.labels["phase"] for s in families["vllm:server_phase"].samples if s.value == 1]


@pytest.fixture
def replica(tiny_model: Path, tmp_path: Path):
    """A leader and a worker, each in its own process group, all killed at the end."""
    group = [
        "--tensor-parallel-size", "2", "--nnodes", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
        "--distributed-executor-backend", "mp",
    ]  # fmt: skip
    leader = ext_server(tiny_model, tmp_path / "leader.log", *group, "--node-rank", "0",
                        env={"VLLM_CPU_OMP_THREADS_BIND": "0"})  # fmt: skip
    # The leader's other API-side flags are tolerated on a worker (one argument list for both).
    worker = ext_server(tiny_model, tmp_path / "worker.log", *group, "--node-rank", "1",
                        "--headless", "--orca-formats", "TEXT",
                        env={"VLLM_CPU_OMP_THREADS_BIND": "1"})  # fmt: skip
    worker.admin_port = free_port()
    leader.new_session = worker.new_session = True
    try:
        yield leader, worker
    finally:
        for server in (worker, leader):
            if server.proc is not None:
                server.kill_group()
        print(f"\nleader log: {leader.log_path}\nworker log: {worker.log_path}")


def test_a_two_node_replica_starts_serves_and_fails_loudly(replica):
    leader, worker = replica
    worker.start()
    leader.start()
    with httpx.Client(timeout=5.0) as client:
        # Liveness of the worker within seconds, long before the group exists.
        health = wait_for(
            "worker /health 200",
            lambda: (r := get(client, f"{worker.url}/health")) and r.status_code == 200,
            timeout=20.0,
            every=0.02,
        )
        assert health
        health_latency = time.monotonic() - worker.started_at
        ready = get(client, f"{worker.url}/ready")
        assert ready is not None and ready.status_code == 503
        assert ready.json()["role"] == "worker"
        assert ready.json()["phase"] in ("starting", "importing", "loading_model")

        # Both ready; the worker's phases as /ready and /metrics name them on the way.
        phases: dict[str, list[str]] = {"worker": [], "leader": []}
        ready_at: dict[str, float] = {}
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while len(ready_at) < 2 and time.monotonic() < deadline:
            for name, server in (("worker", worker), ("leader", leader)):
                assert server.proc.poll() is None, f"{name} exited:\n{server.log()[-3000:]}"
                if name in ready_at:
                    continue
                r = get(client, f"{server.url}/ready")
                if r is None:
                    continue
                if not phases[name] or phases[name][-1] != r.json()["phase"]:
                    phases[name].append(r.json()["phase"])
                if r.status_code == 200:
                    ready_at[name] = time.monotonic() - server.started_at
            time.sleep(0.05)
        assert len(ready_at) == 2, f"not ready: {phases}\n{leader.log()[-2000:]}"
        worker_body = client.get(f"{worker.url}/ready").json()
        leader_body = client.get(f"{leader.url}/ready").json()
        print(f"\nworker /health after {health_latency:.2f} s; ready after "
              f"{ready_at['worker']:.1f} s, leader after {ready_at['leader']:.1f} s")  # fmt: skip
        print(f"worker phases {phases['worker']} {worker_body['startup_seconds']}")
        print(f"leader phases {phases['leader']} {leader_body['startup_seconds']}")
        # The worker's sequence, and the wait for the group on both nodes (reported by the
        # vLLM worker processes), in the seconds per phase of /ready's body.
        worker_order = ["starting", "importing", "loading_model", "joining_group", "ready"]
        assert all(p in worker_order for p in phases["worker"]), phases["worker"]
        assert phases["worker"][-1] == "ready"
        assert set(worker_body["startup_seconds"]) == set(worker_order) - {"ready"}
        assert "joining_group" in leader_body["startup_seconds"]
        assert {"profiling", "starting_api"} <= set(leader_body["startup_seconds"])
        assert health_latency < 10.0 < ready_at["worker"]
        assert current_phase(client.get(f"{worker.url}/metrics").text) == ["ready"]
        # A worker serves no API; it said which of the leader's flags it ignores.
        assert client.post(f"{worker.url}/v1/completions", json={}).status_code == 404
        assert "flags=['--admin-port', '--orca-formats']" in worker.log()

        request = {"model": SERVED_NAME, "prompt": "hello", "max_tokens": 4, "temperature": 0}
        completion = client.post(f"{leader.url}/v1/completions", json=request, timeout=120)
        assert completion.status_code == 200, completion.text
        assert completion.json()["usage"]["completion_tokens"] == 4

        # The worker's vLLM worker process dies: the worker process fails (vLLM's headless
        # node would exit 0), its liveness with it.
        (vllm_worker,) = [
            p
            for p in psutil.Process(worker.proc.pid).children()
            if "Worker" in " ".join(p.cmdline())
        ]
        killed = time.monotonic()
        vllm_worker.kill()
        code = worker.proc.wait(EXIT_TIMEOUT)
        worker_exit = time.monotonic() - killed
        assert code == 1, worker.log()[-3000:]
        assert "server failed: a worker process of this node died" in worker.log()
        # What is left of the pod goes too.
        worker.kill_group()

        # The leader notices at its next request (its collective with the gone peer fails),
        # leaves ready and exits with a failure status.
        killed = time.monotonic()
        try:
            failed = client.post(f"{leader.url}/v1/completions", json=request, timeout=120)
            assert failed.status_code >= 500
        except httpx.TransportError:
            pass
        wait_for(
            "leader not ready",
            lambda: (r := get(client, f"{leader.url}/ready")) is None or r.status_code != 200,
            timeout=EXIT_TIMEOUT,
        )
        code = leader.proc.wait(EXIT_TIMEOUT)
        leader_exit = time.monotonic() - killed
        assert code == 1, leader.log()[-3000:]
        print(f"worker exit {worker_exit:.1f} s after its vLLM worker died; "
              f"leader exit {leader_exit:.1f} s after its next request")  # fmt: skip
