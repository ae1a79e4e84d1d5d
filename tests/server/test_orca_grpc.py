"""The out-of-band gRPC service, served for real and read with a real grpcio client."""

from __future__ import annotations

import itertools
import socket
import threading
import time

import grpc
import pytest
from xds.data.orca.v3.orca_load_report_pb2 import OrcaLoadReport
from xds.service.orca.v3.orca_pb2 import OrcaLoadReportRequest

from vllm_server_ext.load_tracker import EngineLoad, LoadTracker
from vllm_server_ext.orca_grpc import METHOD, SERVICE, OrcaGrpcServer, report_interval
from vllm_server_ext.token_load import TokenLoad
from vllm_testkit.servers import free_port


@pytest.fixture
def served():
    tracker = LoadTracker(token_load=TokenLoad(), max_num_seqs=8)
    server = OrcaGrpcServer(tracker, host="127.0.0.1", port=free_port(), min_interval=0.2)
    server.start()
    channel = grpc.insecure_channel(server.address)
    stream = channel.unary_stream(
        f"/{SERVICE}/{METHOD}",
        request_serializer=OrcaLoadReportRequest.SerializeToString,
        response_deserializer=OrcaLoadReport.FromString,
    )
    yield tracker, server, stream
    channel.close()
    server.stop()


def request(seconds: float) -> OrcaLoadReportRequest:
    r = OrcaLoadReportRequest()
    r.report_interval.FromMilliseconds(int(seconds * 1000))
    return r


def arrival_times(stream, req: OrcaLoadReportRequest, count: int) -> list[float]:
    start = time.monotonic()
    call = stream(req)
    times = []
    for _ in call:
        times.append(time.monotonic() - start)
        if len(times) == count:
            break
    call.cancel()
    return times


def test_interval_clamping():
    assert report_interval(request(0.05), floor=1.0) == 1.0
    assert report_interval(request(5.0), floor=1.0) == 5.0
    assert report_interval(OrcaLoadReportRequest(), floor=1.0) == 1.0  # unset


def test_first_report_at_once_then_at_the_clamped_interval(served):
    _, _, stream = served
    times = arrival_times(stream, request(0.01), 4)  # asks for 10 ms, floor is 200 ms
    assert times[0] < 0.5
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.18 for gap in gaps), gaps
    assert all(gap < 1.0 for gap in gaps), gaps


def test_a_longer_requested_interval_is_kept(served):
    _, _, stream = served
    times = arrival_times(stream, request(0.5), 2)
    assert times[1] - times[0] >= 0.48


def test_reports_carry_the_current_load(served):
    tracker, _, stream = served
    tracker.record_engine(0, EngineLoad(num_requests_running=3, kv_cache_usage=0.4))
    report = next(iter(stream(request(1))))
    assert report.named_metrics["num_requests_running"] == 3
    assert report.named_metrics["kv_cache_usage_perc"] == pytest.approx(0.4)
    assert report.application_utilization == pytest.approx(0.4)


def test_two_clients_and_cancel_releases_the_stream(served):
    _, server, stream = served
    results: list[list[float]] = []
    threads = [
        threading.Thread(target=lambda: results.append(arrival_times(stream, request(0.2), 3)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(results) == 2
    assert all(len(r) == 3 for r in results)
    deadline = time.monotonic() + 5
    while server.streams and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.streams == 0


def test_stop_ends_open_streams(served):
    _, server, stream = served
    call = stream(request(0.2))
    next(iter(call))
    server.stop()
    with pytest.raises(grpc.RpcError):
        for _ in call:
            pass


def test_a_port_in_use_is_an_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        tracker = LoadTracker(token_load=TokenLoad(), max_num_seqs=8)
        server = OrcaGrpcServer(tracker, host="127.0.0.1", port=port, min_interval=1)
        with pytest.raises(RuntimeError, match=r"cannot serve ORCA gRPC on 127\.0\.0\.1:"):
            server.start()
