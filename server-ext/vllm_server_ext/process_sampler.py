"""CPU and memory of the server's process tree, for ORCA's `cpu_utilization` and
`mem_utilization`: sampled by a background thread into the `LoadTracker`, against the limits the
container runs under (cgroup v2 quota and memory limit, else CPU affinity and RAM)."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from .load_tracker import LoadTracker


class ProcessSampler:
    """CPU and memory of this process and its children (the engine), once per `interval`, into
    the tracker: a background thread, never on a request's path."""

    def __init__(self, tracker: LoadTracker, interval: float = 1.0) -> None:
        import psutil

        self.tracker = tracker
        self.interval = interval
        self._root = psutil.Process()
        self._procs: dict[int, object] = {}
        self._cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        self._cpus = min(self._cpus, _cgroup_cpu_limit() or self._cpus)
        self._memory = _cgroup_memory_limit() or psutil.virtual_memory().total
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vllm-ext-load", daemon=True)

    def start(self) -> ProcessSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def sample(self) -> None:
        import psutil

        procs = [self._root]
        with contextlib.suppress(psutil.Error):
            procs += self._root.children(recursive=True)
        cpu = rss = 0.0
        live = {}
        for proc in procs:
            proc = self._procs.get(proc.pid, proc)  # keep cpu_percent's state between samples
            try:
                cpu += proc.cpu_percent()  # type: ignore[attr-defined]
                rss += proc.memory_info().rss  # type: ignore[attr-defined]
            except psutil.Error:
                continue
            live[proc.pid] = proc  # type: ignore[attr-defined]
        self._procs = live
        self.tracker.cpu_utilization = cpu / 100 / self._cpus
        self.tracker.mem_utilization = min(1.0, rss / self._memory)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()


def _cgroup_cpu_limit() -> float | None:
    """CPUs allowed by the cgroup v2 quota (a container's CPU limit), if any."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)  # may be fractional
    except (OSError, ValueError):
        return None


def _cgroup_memory_limit() -> int | None:
    try:
        value = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        return None if value == "max" else int(value)
    except (OSError, ValueError):
        return None
