"""The ORCA gRPC service under more streams and connections than it allows: the excess is
refused (RESOURCE_EXHAUSTED, or waits for its connection's streams), the streams already open
keep streaming."""

from __future__ import annotations

import asyncio
import collections

import grpc
import pytest
from xds.data.orca.v3.orca_load_report_pb2 import OrcaLoadReport
from xds.service.orca.v3.orca_pb2 import OrcaLoadReportRequest

from vllm_server_ext import orca_grpc
from vllm_server_ext.load_tracker import LoadTracker
from vllm_server_ext.orca_grpc import METHOD, SERVICE, OrcaGrpcServer
from vllm_server_ext.token_load import TokenLoad
from vllm_testkit.servers import free_port

# The defaults the server runs with (the values the flood exceeded by far).
MAX_STREAMS = getattr(orca_grpc, "MAX_STREAMS", 128)
PER_CONNECTION = getattr(orca_grpc, "MAX_STREAMS_PER_CONNECTION", 16)
MAX_CONNECTIONS = getattr(orca_grpc, "MAX_CONNECTIONS", 128)


@pytest.fixture
def served():
    tracker = LoadTracker(token_load=TokenLoad(), max_num_seqs=8)
    server = OrcaGrpcServer(tracker, host="127.0.0.1", port=free_port(), min_interval=0.2)
    server.start()
    yield server
    server.stop()


def channel(server: OrcaGrpcServer) -> grpc.aio.Channel:
    """A channel with a connection of its own (channels share connections by default)."""
    return grpc.aio.insecure_channel(
        server.address, options=[("grpc.use_local_subchannel_pool", 1)]
    )


def open_stream(ch: grpc.aio.Channel):
    stream = ch.unary_stream(
        f"/{SERVICE}/{METHOD}",
        request_serializer=OrcaLoadReportRequest.SerializeToString,
        response_deserializer=OrcaLoadReport.FromString,
    )
    return stream(OrcaLoadReportRequest())


async def first_report(call, timeout: float) -> str:
    try:
        await asyncio.wait_for(call.read(), timeout)
        return "report"
    except grpc.aio.AioRpcError as e:
        return e.code().name
    except TimeoutError:
        return "waiting"


def test_streams_beyond_the_cap_are_refused_while_open_ones_keep_streaming(served):
    connections = MAX_STREAMS // PER_CONNECTION + 1  # one connection's worth too many

    async def flood():
        channels = [channel(served) for _ in range(connections)]
        calls = [open_stream(ch) for ch in channels for _ in range(PER_CONNECTION)]
        try:
            first = await asyncio.gather(*(first_report(c, 10) for c in calls))
            open_calls = [c for c, r in zip(calls, first, strict=True) if r == "report"]
            # Every stream that got in gets its next reports.
            second = await asyncio.gather(*(first_report(c, 5) for c in open_calls))
            third = await asyncio.gather(*(first_report(c, 5) for c in open_calls))
            return first, second, third, served.streams
        finally:
            for c in calls:
                c.cancel()
            for ch in channels:
                await ch.close()

    first, second, third, streams = asyncio.run(flood())
    counts = collections.Counter(first)
    assert counts == {"report": MAX_STREAMS, "RESOURCE_EXHAUSTED": len(first) - MAX_STREAMS}
    assert streams == MAX_STREAMS
    assert set(second) == set(third) == {"report"}


def test_a_connection_opens_a_bounded_number_of_streams(served):
    async def one_connection():
        ch = channel(served)
        calls = [open_stream(ch) for _ in range(PER_CONNECTION + 1)]
        try:
            reads = [asyncio.ensure_future(c.read()) for c in calls]
            await asyncio.wait(reads, timeout=2)  # not wait_for: that would cancel the calls
            waiting = [r for r in reads if not r.done()]
            served_now = [c for c, r in zip(calls, reads, strict=True) if r.done()]
            # When one of its streams ends, the waiting one starts.
            served_now[0].cancel()
            done, _ = await asyncio.wait(waiting, timeout=5)
            later = [isinstance(r.result(), OrcaLoadReport) for r in done]
            return len(served_now), len(waiting), later
        finally:
            for c in calls:
                c.cancel()
            await ch.close()

    served_now, waiting, later = asyncio.run(one_connection())
    assert (served_now, waiting) == (PER_CONNECTION, 1)
    assert later == [True]


def test_connections_beyond_the_cap_are_refused(served):
    async def many():
        channels = [channel(served) for _ in range(MAX_CONNECTIONS + 8)]
        calls = []
        try:
            for ch in channels:  # one at a time: each connection is up before the next
                calls.append(open_stream(ch))
                await first_report(calls[-1], 5)
            # The open streams are still served.
            return [await first_report(c, 5) for c in calls]
        finally:
            for c in calls:
                c.cancel()
            for ch in channels:
                await ch.close()

    results = asyncio.run(many())
    counts = collections.Counter(results)
    assert counts["report"] == MAX_CONNECTIONS
    assert counts["UNAVAILABLE"] == 8
