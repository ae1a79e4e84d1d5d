"""A real Prometheus (Debian's `prometheus` package; `make prometheus` installs it) scraping
test servers, queried through its HTTP API: what the autoscalers' queries are evaluated on.

Targets are static, each with the labels the Prometheus Operator would give a VLLMDeployment's
pods through the operator's monitors (`namespace`, `serving_vllm_ai_deployment`): the static
labels stand in for that relabeling, named so.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from .servers import free_port

BINARY = "prometheus"


def available() -> str | None:
    """The binary's path, or None where the package is not installed."""
    return shutil.which(BINARY)


@dataclass
class Target:
    address: str  # host:port of a /metrics endpoint
    labels: Mapping[str, str]


@dataclass
class Prometheus:
    targets: Sequence[Target]
    work: Path
    scrape_interval: str = "1s"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Prometheus:
        binary = available()
        if binary is None:
            raise RuntimeError("prometheus is not installed (make prometheus)")
        config = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": f"target-{i}",
                    "static_configs": [{"targets": [t.address], "labels": dict(t.labels)}],
                }
                for i, t in enumerate(self.targets)
            ],
        }
        path = self.work / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        self._log = (self.work / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={path}",
                f"--storage.tsdb.path={self.work / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"prometheus exited: {self.log()[-2000:]}")
                try:
                    if client.get(f"{self.url}/-/ready").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise RuntimeError(f"prometheus not ready after {timeout} s: {self.log()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def log(self) -> str:
        return (self.work / "prometheus.log").read_text(errors="replace")

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's vector: [{"metric": {...}, "value": [t, "v"]}, ...]."""
        params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
        reply = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=10).json()
        if reply["status"] != "success":
            raise AssertionError(f"{promql}: {reply}")
        return reply["data"]["result"]

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[dict]:
        params = {"query": promql, "start": start, "end": end, "step": step}
        reply = httpx.get(f"{self.url}/api/v1/query_range", params=params, timeout=10).json()
        if reply["status"] != "success":
            raise AssertionError(f"{promql}: {reply}")
        return reply["data"]["result"]
