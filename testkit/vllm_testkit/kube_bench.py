"""What the operator benchmarks share: a faster kmock emulator and the operator as a process."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import attrs
import kmock
import psutil

from .kube_emulator import KubeEmulator

CR = kmock.resource("serving.vllm.ai/v1alpha1/vllmdeployments")


class BenchEmulator(KubeEmulator):
    """kmock 0.8 makes three scans per request that benchmarks of thousands of objects cannot
    afford; this replaces them, so that they measure the operator, not the emulator:
    - it scans its whole request log on every request (200 creates took 3.7 s here): this
      keeps the log itself (`history`) and leaves kmock only the requests in flight (the one
      at hand, open watch streams);
    - it finds the object a request names by scanning every object of every kind (2,000
      objects posted next to the operator took 100 s at 1,000 VLLMDeployments): this looks
      it up in an index by kind, namespace and name, kept up with kmock's store;
    - it matches every request to its reaction by scanning the requests in flight, the
      watch streams included (one per kind the operator watches): here a stream leaves
      that scan once it is matched.
    It also sends errors without the traceback kmock formats into each, as a real API server
    does (the operator's reads of children not made yet are 404s). Uses kmock's private log,
    store, object lookup and error rendering."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.history: list = []
        # (group, version, plural) -> (namespace, name) -> kmock's object; `_indexed` of the
        # store's keys so far (it only grows: objects are soft-deleted).
        self._by_kind: dict[tuple, dict[tuple, object]] = {}
        self._indexed = 0

    def _KubernetesEmulator__get_objs(self, request, strict: bool) -> list:
        """kmock's lookup of the objects a request names (its own scans them all)."""
        store = self._objects._objects  # kmock's dict: (resource, namespace, name) -> object
        if len(store) < self._indexed:  # hard-deleted (only tests do that): start over
            self._by_kind, self._indexed = {}, 0
        # The keys added since (a dict keeps its order: the newest are the last).
        for (resource, namespace, name), obj in itertools.islice(
            reversed(store.items()), len(store) - self._indexed
        ):
            kind = (resource.group, resource.version, resource.plural)
            self._by_kind.setdefault(kind, {})[namespace, name] = obj
        self._indexed = len(store)
        wanted = request.resource
        if wanted is None:  # not a Kubernetes request: nothing, as kmock's own says
            return []
        objects = self._by_kind.get((wanted.group, wanted.version, wanted.plural), {})
        namespace, name = request.namespace, request.name
        if name is not None and (strict or namespace is not None):
            found = objects.get((namespace, name))
            return [] if found is None else [found]
        return [
            obj
            for (ns, n), obj in objects.items()
            if ((namespace is None and not strict) or ns == namespace) and name in (None, n)
        ]

    def raw(self, resource, namespace: str, name: str) -> dict | None:
        """The object as stored (a plain dict), or None: what `objects[key]` gives through
        kmock's views, at a fraction of the cost (the benchmarks poll thousands of objects)."""
        obj = self._objects._objects.get((resource, namespace, name))
        return None if obj is None or obj.deleted else obj.raw

    async def _render_error(self, exc):
        # kmock formats a traceback into every error's details: a millisecond each.
        if isinstance(exc, kmock.KubernetesError) and exc.details is None:
            exc = attrs.evolve(exc, details={"causes": []})
        return await super()._render_error(exc)

    async def _handle(self, request):
        self.history.append(request)
        try:
            return await super()._handle(request)
        finally:
            with contextlib.suppress(ValueError):  # a watch stream's went when it began
                self._requests.remove(request)

    async def _serve_watch(self, request):
        # kmock matches a request to its reaction by scanning its requests in flight, each one
        # through every reaction's filters: with a stream open per watched kind that was three
        # quarters of the emulator's CPU. Once here, the stream is matched: it leaves the scan.
        with contextlib.suppress(ValueError):
            self._requests.remove(request)
        async for event in super()._serve_watch(request):
            yield event


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
