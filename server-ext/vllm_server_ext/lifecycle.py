"""The server's lifecycle: startup phases, their timings, readiness and the instance id.

Imports nothing heavy: the early server reads this before vLLM is even imported. One
`ServerState` per process, shared by the early server thread, the launcher and vLLM's event loop,
so every write goes through a lock (reads of single attributes are atomic under the GIL).
"""

from __future__ import annotations

import enum
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .logs import log

if TYPE_CHECKING:
    from .download import DownloadProgress

# Where child processes and the middleware find the instance id (set by the launcher).
INSTANCE_ID_ENV = "SERVER_EXT_INSTANCE_ID"


class Phase(str, enum.Enum):
    """Where the server is in its life. Startup phases come in this order (`joining_group`
    comes and goes within `loading_model`); the last four are states of a built server."""

    STARTING = "starting"  # process up, HTTP port bound, arguments parsed
    # hf:// and s3:// models: another server sharing the cache is downloading the model.
    WAITING_FOR_CACHE = "waiting_for_cache"
    DOWNLOADING = "downloading"  # hf:// and s3:// models: fetching (or checking) the files
    IMPORTING = "importing"  # importing vLLM, torch and friends (most of a CPU start)
    LOADING_MODEL = "loading_model"  # engine config, engine process, weights
    # Multi-node replicas only, within loading_model: this node's workers wait in
    # torch.distributed's rendezvous for every other node (reported by the workers).
    JOINING_GROUP = "joining_group"
    PROFILING = "profiling"  # memory profiling and KV cache allocation (reported by the engine)
    WARMING_UP = "warming_up"  # compilation, CUDA graphs, warm-up runs (reported by the engine)
    STARTING_API = "starting_api"  # building vLLM's app and its state
    READY = "ready"
    SLEEPING = "sleeping"
    DRAINING = "draining"
    DEAD = "dead"


STARTUP_PHASES = (
    Phase.STARTING,
    Phase.WAITING_FOR_CACHE,
    Phase.DOWNLOADING,
    Phase.IMPORTING,
    Phase.LOADING_MODEL,
    Phase.PROFILING,
    Phase.WARMING_UP,
    Phase.STARTING_API,
)
# Startup phases that come and go within another: ordered as that one.
_WITHIN = {Phase.JOINING_GROUP: Phase.LOADING_MODEL}


def is_startup(phase: Phase) -> bool:
    return phase in STARTUP_PHASES or phase in _WITHIN


def _rank(phase: Phase) -> int:
    return STARTUP_PHASES.index(_WITHIN.get(phase, phase))


class ServerFailure(Exception):
    """The server stops because something it cannot run without died (the engine, a worker
    process of this node): the process exits with status 1 (so that Kubernetes restarts it),
    the reason logged, without a traceback."""


@dataclass
class ServerState:
    """Lifecycle of one server process. `instance_id` is new on every start, so a controller
    that sees it change knows the server restarted and lost its runtime state (LoRA adapters)."""

    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started_at: float = field(default_factory=time.monotonic)
    phase: Phase = Phase.STARTING
    model: str | None = None
    error: str | None = None
    # The worker role of a multi-node replica (`--headless`): it serves no API.
    worker: bool = False
    # The model's download (hf:// and s3:// sources), from its start on.
    download: DownloadProgress | None = None
    # Seconds spent in each startup phase, filled as phases end.
    durations: dict[Phase, float] = field(default_factory=dict)
    _phase_started_at: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def enter(self, phase: Phase) -> None:
        """Move to `phase`. Startup phases only move forward: a late report of an earlier phase
        (e.g. from the engine process) is ignored; `joining_group` and `loading_model` may
        alternate (their seconds add up). Dead is final (a shutdown that follows a dead
        engine is no drain)."""
        with self._lock:
            if phase == self.phase or self.phase == Phase.DEAD:
                return
            if is_startup(phase) and not is_startup(self.phase):
                return
            if is_startup(phase) and _rank(phase) < _rank(self.phase):
                return
            now = time.monotonic()
            if is_startup(self.phase):
                elapsed = now - self._phase_started_at
                self.durations[self.phase] = self.durations.get(self.phase, 0.0) + elapsed
            previous, self.phase = self.phase, phase
            self._phase_started_at = now
        log.info(
            "phase %s", phase.value, extra={"after": previous.value, "uptime": self._uptime(now)}
        )

    def _uptime(self, now: float) -> float:
        return round(now - self.started_at, 3)

    def fail(self, error: str) -> None:
        self.error = error
        self.enter(Phase.DEAD)

    @property
    def ready(self) -> bool:
        return self.phase == Phase.READY

    def startup_seconds(self) -> dict[str, float]:
        """Seconds per startup phase so far, the current one included."""
        with self._lock:
            out = {p.value: d for p, d in self.durations.items()}
            if is_startup(self.phase):
                elapsed = time.monotonic() - self._phase_started_at
                out[self.phase.value] = out.get(self.phase.value, 0.0) + elapsed
            return out

    def describe(self) -> dict[str, object]:
        """The body of `/ready`."""
        body: dict[str, object] = {
            "ready": self.ready,
            "phase": self.phase.value,
            "instance_id": self.instance_id,
            "model": self.model,
            "uptime_seconds": round(time.monotonic() - self.started_at, 3),
            "startup_seconds": {k: round(v, 3) for k, v in self.startup_seconds().items()},
        }
        if self.download is not None:
            body["download"] = self.download.describe()
        if self.worker:
            body["role"] = "worker"
        if self.error:
            body["error"] = self.error
        return body


class StateCollector:
    """Prometheus collector for the lifecycle: served by the early server before vLLM exists and
    registered in vLLM's registry once the engine is built (vLLM unregisters `vllm:` metrics
    created before its stat logger, so registering earlier would lose them)."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def collect(self) -> Iterator[object]:
        from prometheus_client.core import GaugeMetricFamily

        state = self.state
        phase = GaugeMetricFamily(
            "vllm:server_phase",
            "Lifecycle phase of the server: 1 for the current phase, 0 for the others.",
            labels=["phase"],
        )
        for p in Phase:
            phase.add_metric([p.value], 1.0 if p == state.phase else 0.0)
        yield phase
        seconds = GaugeMetricFamily(
            "vllm:startup_phase_duration_seconds",
            "Seconds spent in each startup phase (the current one still counting).",
            labels=["phase"],
        )
        for name, value in state.startup_seconds().items():
            seconds.add_metric([name], value)
        yield seconds
        yield GaugeMetricFamily(
            "vllm:server_ready",
            "1 when the server accepts requests (/ready is 200), else 0.",
            value=1.0 if state.ready else 0.0,
        )
        if (download := state.download) is not None:
            yield GaugeMetricFamily(
                "vllm:startup_download_bytes",
                "Bytes of the model in place so far (what the cache already held included).",
                value=float(download.bytes),
            )
            if download.total is not None:
                yield GaugeMetricFamily(
                    "vllm:startup_download_total_bytes",
                    "Bytes of the model to download, once known.",
                    value=float(download.total),
                )
        info = GaugeMetricFamily(
            "vllm:server_instance_info",
            "Identity of this server process; the instance_id changes on every start.",
            labels=["instance_id"],
        )
        info.add_metric([state.instance_id], 1.0)
        yield info
