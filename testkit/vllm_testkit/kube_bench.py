"""What the operator benchmarks share: a faster kmock emulator and the operator as a process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import kmock
import psutil

from .kube_emulator import KubeEmulator

CR = kmock.resource("serving.vllm.ai/v1alpha1/vllmdeployments")


class BenchEmulator(KubeEmulator):
    """kmock 0.8 scans its whole request log on every request (quadratic: 200 creates take
    3.7 s here). This keeps the log itself (`history`) and leaves kmock only the requests in
    flight (the one at hand, open watch streams), so the benchmarks measure the operator, not
    the emulator. Uses kmock's private log."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.history: list = []

    async def _handle(self, request):
        self.history.append(request)
        try:
            return await super()._handle(request)
        finally:  # in-flight requests (watch streams) stay until they end
            self._requests.remove(request)


class Operator:
    """`python -m vllm_operator` as its own process, its peak RSS sampled."""

    def __init__(self, kubeconfig: Path, log: Path) -> None:
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        self.log_path = log
        self._log = log.open("wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vllm_operator", "--standalone", "--quiet"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.peak_rss = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        process = psutil.Process(self.proc.pid)
        while not self._stop.is_set():
            try:
                self.peak_rss = max(self.peak_rss, process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.02)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self._stop.set()
        self._sampler.join()
        self._log.close()


@contextlib.asynccontextmanager
async def start_operator(emulator: BenchEmulator, kubeconfig: Path, work: Path):
    operator = Operator(kubeconfig, work / "operator.log")
    try:
        watching = (kmock.action.WATCH, CR)
        while not any((r.action, r.resource) == watching for r in emulator.history):
            assert operator.proc.poll() is None, operator.log_path.read_text()
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # its watch streams subscribe to the emulator's events
        yield operator
    finally:
        await asyncio.to_thread(operator.stop)  # the emulator must keep answering meanwhile
