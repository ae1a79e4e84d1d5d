"""Real `vllm-ext-serve` processes for tests: start, record the startup timeline, stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from .tiny_model import CPU_ARGS

SERVED_NAME = "tiny-llama"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Probe:
    """One look at the server during startup: seconds since exec and what each endpoint said
    (None: connection refused or timed out)."""

    at: float
    health: int | None
    ready: int | None
    phase: str | None
    metrics: str | None = None


@dataclass
class ServerProcess:
    """A real `vllm-ext-serve` (or any command) process on a free port, with its log in a file."""

    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    grpc_port: int | None = None
    admin_port: int | None = None  # with it, `--admin-port` is passed
    # In a process group of its own (with vLLM's child processes): `kill_group` ends them all.
    new_session: bool = False
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    timeline: list[Probe] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def admin_url(self) -> str:
        """Where the LoRA routes are served: the admin port if there is one."""
        return f"http://{self.host}:{self.admin_port or self.port}"

    def start(self) -> ServerProcess:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", **self.env}
        env.pop("VLLM_ALLOW_RUNTIME_LORA_UPDATING", None)  # the server must not need it
        self._log = self.log_path.open("wb")
        self.started_at = time.monotonic()
        admin = ["--admin-port", str(self.admin_port)] if self.admin_port else []
        self.proc = subprocess.Popen(
            [*self.argv, "--host", self.host, "--port", str(self.port), *admin],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=self.new_session,
        )
        return self

    def probe(self, client: httpx.Client, with_metrics: bool = False) -> Probe:
        at = time.monotonic() - self.started_at
        health = ready = phase = metrics = None
        try:
            health = client.get(f"{self.url}/health").status_code
            r = client.get(f"{self.url}/ready")
            ready, phase = r.status_code, r.json().get("phase")
            if with_metrics:
                metrics = client.get(f"{self.url}/metrics").text
        except httpx.TransportError:
            pass
        return Probe(at, health, ready, phase, metrics)

    def wait_ready(self, timeout: float = 240.0) -> ServerProcess:
        """Poll every 50 ms until /ready is 200, recording the startup timeline."""
        assert self.proc is not None
        with httpx.Client(timeout=2.0) as client:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    pytest.fail(f"server exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
                probe = self.probe(client, with_metrics=len(self.timeline) % 20 == 0)
                self.timeline.append(probe)
                if probe.ready == 200:
                    return self
                time.sleep(0.05)
        pytest.fail(f"server not ready after {timeout} s:\n{self.log()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (`new_session`: the server and vLLM's children), as
        when its pod dies; SIGKILL also reaps the server and closes its log."""
        assert self.proc is not None and self.new_session
        with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
            os.killpg(self.proc.pid, sig)
        if sig == signal.SIGKILL:
            self.proc.wait(30)
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`vllm-ext-serve ARGS` run to its end (a command line it refuses exits at once)."""
    return subprocess.run(
        [sys.executable, "-m", "vllm_server_ext", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def ext_server(model: Path, log_path: Path, *extra: str, env: dict[str, str] | None = None):
    argv = [sys.executable, "-m", "vllm_server_ext", str(model), "--served-model-name",
            SERVED_NAME, *CPU_ARGS, *extra]  # fmt: skip
    return ServerProcess(argv, log_path, env=env or {})
