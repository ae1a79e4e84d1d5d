"""Out-of-band ORCA over gRPC: `xds.service.orca.v3.OpenRcaService/StreamCoreMetrics`.

One report at once, then one per requested `report_interval`, never more often than the
configured floor (gRPC's own ORCA services default to 30 s; LLM balancers want about 1 s). The
server runs grpc.aio on its own event loop in a thread, so a busy API loop never delays reports;
it reads the shared `LoadTracker` snapshot. `xds-protos` ships no `orca_pb2_grpc`, so the method
is registered with grpcio's generic handlers.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import grpc
from xds.data.orca.v3.orca_load_report_pb2 import OrcaLoadReport
from xds.service.orca.v3.orca_pb2 import OrcaLoadReportRequest

from .load_tracker import LoadTracker
from .logs import log

SERVICE = "xds.service.orca.v3.OpenRcaService"
METHOD = "StreamCoreMetrics"

# Bounds on what clients may hold open (a balancer holds one stream per backend connection): a
# call beyond MAX_STREAMS gets RESOURCE_EXHAUSTED, a stream beyond MAX_STREAMS_PER_CONNECTION
# waits for one of its connection's to end, a connection beyond MAX_CONNECTIONS is closed.
MAX_STREAMS = 128
MAX_STREAMS_PER_CONNECTION = 16
MAX_CONNECTIONS = 128
MAX_REQUEST_BYTES = 4096  # an OrcaLoadReportRequest is a few bytes
IDLE_CONNECTION_SECONDS = 300  # a connection without a stream for this long is closed


def server_options(max_streams_per_connection: int, max_connections: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_concurrent_streams", max_streams_per_connection),
        ("grpc.max_allowed_incoming_connections", max_connections),
        ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
        ("grpc.max_connection_idle_ms", IDLE_CONNECTION_SECONDS * 1000),
    ]


def report_interval(request: OrcaLoadReportRequest, floor: float) -> float:
    """The requested interval, clamped to `floor` (an unset interval gets the floor)."""
    requested = request.report_interval.seconds + request.report_interval.nanos / 1e9
    return max(requested, floor)


class OrcaGrpcServer:
    def __init__(
        self,
        tracker: LoadTracker,
        *,
        host: str,
        port: int,
        min_interval: float,
        max_streams: int = MAX_STREAMS,
        max_streams_per_connection: int = MAX_STREAMS_PER_CONNECTION,
        max_connections: int = MAX_CONNECTIONS,
    ):
        self.tracker = tracker
        self.address = f"[{host}]:{port}" if ":" in host else f"{host or '0.0.0.0'}:{port}"
        self.min_interval = min_interval
        self.max_streams = max_streams
        self.options = server_options(max_streams_per_connection, max_connections)
        self.streams = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="vllm-ext-orca-grpc", daemon=True)

    async def stream_core_metrics(
        self, request: OrcaLoadReportRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[OrcaLoadReport]:
        interval = report_interval(request, self.min_interval)
        self.streams += 1
        try:
            while True:
                yield self.tracker.report()
                await asyncio.sleep(interval)
        finally:  # the client cancelled or the server is stopping
            self.streams -= 1

    def start(self) -> OrcaGrpcServer:
        """Start serving; raises if the port cannot be bound."""
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        log.info("ORCA gRPC service listening", extra={"address": self.address})
        return self

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        server = grpc.aio.server(maximum_concurrent_rpcs=self.max_streams, options=self.options)
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                METHOD: grpc.unary_stream_rpc_method_handler(
                    self.stream_core_metrics,
                    request_deserializer=OrcaLoadReportRequest.FromString,
                    response_serializer=OrcaLoadReport.SerializeToString,
                )
            },
        )
        server.add_generic_rpc_handlers((handler,))
        try:
            if server.add_insecure_port(self.address) == 0:
                raise OSError("the port is not available")
            await server.start()
        except BaseException as e:
            self._error = RuntimeError(f"cannot serve ORCA gRPC on {self.address}: {e}")
            self._ready.set()
            return
        self._ready.set()
        await self._stopped.wait()
        await server.stop(grace=1.0)  # open streams are cancelled after the grace period

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(timeout=5)
