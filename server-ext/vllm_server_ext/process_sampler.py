"""CPU and memory of the server's process tree, for ORCA's `cpu_utilization` and
`mem_utilization`: sampled by a background thread into the `LoadTracker`, against the limits the
container runs under (cgroup v2 quota and memory limit, else CPU affinity and RAM).

What a sample costs matters: the thread holds the GIL the API's event loop needs, on the CPUs
the engine computes on. Finding the tree's processes (psutil's `children(recursive=True)` reads
`/proc/<pid>/stat` of every process on the host: ~3 ms with 80 processes, more on a busy node)
is done once every `refresh_every` samples (30: the engine's processes live as long as the
server), or at once when a process of the tree is gone; a sample reads each process of the
tree once (psutil's `oneshot`). Looking the tree up every second cost ~4-5 ms of the API
process's CPU per second, ~0.5 % of a CPU the engine needs.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .load_tracker import LoadTracker

# (process identity, CPU seconds so far, RSS bytes), or None once the process is gone.
Reading = tuple[tuple[int, int], float, int]


def read_psutil(pid: int) -> Reading | None:
    """CPU seconds (user + system) and RSS of `pid`, in one read of its status (psutil's
    `oneshot`), with its start time in the identity (a reused pid is another process); None when
    it is gone."""
    import psutil

    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            times = proc.cpu_times()
            return (
                (pid, int(proc.create_time() * 1000)),
                times.user + times.system,
                proc.memory_info().rss,
            )
    except psutil.Error:
        return None


def tree_pids() -> list[int]:
    """This process and its descendants (a walk of every process on the host: seconds apart)."""
    import psutil

    root = psutil.Process()
    pids = [root.pid]
    with contextlib.suppress(psutil.Error):
        pids += [child.pid for child in root.children(recursive=True)]
    return pids


class ProcessSampler:
    """CPU and memory of this process and its children (the engine), once per `interval`, into
    the tracker: a background thread, never on a request's path. The tree's processes are
    looked up every `refresh_every` samples (and after one of them ends): a process started in
    between counts from the next lookup on."""

    def __init__(
        self,
        tracker: LoadTracker,
        interval: float = 1.0,
        *,
        refresh_every: int = 30,
        find_pids: Callable[[], list[int]] = tree_pids,
        read: Callable[[int], Reading | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        cpus: float | None = None,
        memory: int | None = None,
    ) -> None:
        import psutil

        self.tracker = tracker
        self.interval = interval
        self.refresh_every = max(1, refresh_every)
        self._find_pids = find_pids
        self._read = read or read_psutil
        self._clock = clock
        self._pids: list[int] = []
        self._until_refresh = 0
        # identity -> CPU seconds at the previous sample, and when that was
        self._cpu: dict[tuple[int, int], float] = {}
        self._at: float | None = None
        if cpus is None:
            cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
            cpus = min(cpus, _cgroup_cpu_limit() or cpus)
        self._cpus = cpus
        self._memory = memory or _cgroup_memory_limit() or psutil.virtual_memory().total
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vllm-ext-load", daemon=True)

    def start(self) -> ProcessSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def sample(self) -> None:
        """One sample: the tree's CPU use since the previous sample (a process seen for the
        first time counts from this one on) and its RSS now."""
        if self._until_refresh <= 0:
            self._pids = self._find_pids()
            self._until_refresh = self.refresh_every
        self._until_refresh -= 1
        now = self._clock()
        cpu_seconds = 0.0
        rss = 0
        seen: dict[tuple[int, int], float] = {}
        live = []
        for pid in self._pids:
            reading = self._read(pid)
            if reading is None:  # gone: look the tree up again at the next sample
                self._until_refresh = 0
                continue
            identity, cpu, memory = reading
            live.append(pid)
            previous = self._cpu.get(identity)
            if previous is not None:
                cpu_seconds += max(0.0, cpu - previous)
            seen[identity] = cpu
            rss += memory
        self._pids, self._cpu = live, seen
        if self._at is not None and now > self._at:
            self.tracker.cpu_utilization = cpu_seconds / (now - self._at) / self._cpus
        self._at = now
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
