"""ORCA encoders, format choice, load tracking: checked with an independent Envoy-rules parser
and the real `OrcaLoadReport` class."""

from __future__ import annotations

import base64
import math
from decimal import Decimal

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from xds.data.orca.v3.orca_load_report_pb2 import OrcaLoadReport

from vllm_server_ext.load_tracker import (
    EngineLoad,
    LoadTracker,
    RateWindow,
    application_utilization,
)
from vllm_server_ext.orca import (
    ENCODERS,
    FORMATS,
    TOP_LEVEL,
    LoadSnapshot,
    choose_format,
    encode_bin,
    encode_json,
    encode_text,
    parse_formats,
    to_report,
)
from vllm_server_ext.token_load import TokenLoad
from vllm_testkit.envoy_orca import OrcaParseError, parse, weight

BUSY = LoadSnapshot(
    application_utilization=0.75,
    rps_fractional=3.5,
    eps=0.25,
    cpu_utilization=1.5,  # above 1 is allowed: more than one core
    mem_utilization=0.125,
    num_requests_running=8,
    num_requests_waiting=4,
    num_tokens_running=1234,
    num_tokens_waiting=321,
    kv_cache_usage_perc=0.5,
    num_lora_adapters_running=1,
)
IDLE = LoadSnapshot(0.01, 0, 0, 0, 0, 0, 0, 0, 0, 0)
NAMED = {
    "num_requests_running",
    "num_requests_waiting",
    "num_tokens_running",
    "num_tokens_waiting",
    "kv_cache_usage_perc",
    "num_lora_adapters_running",
    "num_lora_adapters_waiting",
}


# --- the independent parser rejects what Envoy rejects ----------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "text cpu_utilization=0.5",  # prefixes are case-sensitive
        "TEXTcpu_utilization=0.5",
        "CSV cpu_utilization=0.5",
        "TEXT cpu_utilization=0.5,cpu_utilization=0.6",
        "TEXT named_metrics.a=1,named_metrics.a=2",
        "TEXT cpu_utilization=-0.1",
        "TEXT cpu_utilization=nan",
        "TEXT eps=inf",
        "TEXT request_cost.x=1",
        "TEXT rps=1",
        "TEXT named_metrics.=1",
        "TEXT cpu_utilization=",
        "TEXT cpu_utilization",
        "TEXT =1",
        'JSON {"cpu_utilization": 0.5, "unknown": 1}',
        "JSON {not json",
        "BIN not*base64",
    ],
)
def test_envoy_rules_reject(value: str):
    with pytest.raises(OrcaParseError):
        parse(value)


def test_envoy_rules_accept_spacing_and_utilization_map():
    report = parse("TEXT cpu_utilization=0.5, named_metrics.a=2 ,utilization.gpu=0.25,")
    assert (report.cpu_utilization, report.named_metrics["a"], report.utilization["gpu"]) == (
        0.5,
        2,
        0.25,
    )


# --- our encoders ---------------------------------------------------------------------------


@pytest.mark.parametrize("encode", [encode_text, encode_json, encode_bin])
@pytest.mark.parametrize("snapshot", [BUSY, IDLE])
def test_every_format_parses_to_the_same_report(encode, snapshot: LoadSnapshot):
    report = parse(encode(snapshot))
    assert report.application_utilization == pytest.approx(snapshot.application_utilization)
    assert report.rps_fractional == pytest.approx(snapshot.rps_fractional)
    assert report.eps == pytest.approx(snapshot.eps)
    assert report.cpu_utilization == pytest.approx(snapshot.cpu_utilization)
    assert report.mem_utilization == pytest.approx(snapshot.mem_utilization)
    named = dict(report.named_metrics)
    assert set(named) <= NAMED
    for key in NAMED:
        assert named.get(key, 0.0) == pytest.approx(getattr(snapshot, key))


def test_text_has_every_key_once_and_envoy_would_weight_it():
    value = encode_text(BUSY)
    keys = [entry.split("=")[0] for entry in value[len("TEXT ") :].split(",")]
    assert len(keys) == len(set(keys))
    assert {"application_utilization", "rps_fractional", "eps"} <= set(keys)
    assert {f"named_metrics.{k}" for k in NAMED} <= set(keys)
    assert weight(parse(value)) == pytest.approx(3.5 / (0.75 + 0.25 / 3.5))


def test_json_uses_snake_case_proto3_names():
    body = encode_json(BUSY)[len("JSON ") :]
    assert '"application_utilization"' in body
    assert '"named_metrics"' in body
    assert "applicationUtilization" not in body


def test_json_is_one_header_line():
    """protobuf's MessageToJson indents by default: a header value must not hold a newline."""
    value = encode_json(BUSY)
    assert "\n" not in value
    assert value.startswith('JSON {"') and value.endswith("}")


def test_bin_is_padded_base64_of_the_message():
    value = encode_bin(BUSY)[len("BIN ") :]
    assert len(value) % 4 == 0
    report = OrcaLoadReport.FromString(base64.b64decode(value, validate=True))
    assert report.named_metrics["num_tokens_running"] == 1234


def test_bad_values_never_void_the_report():
    broken = LoadSnapshot(math.nan, -1, math.inf, -0.5, 0, 0, 0, 0, 0, 0)
    for encode in (encode_text, encode_json, encode_bin):
        report = parse(encode(broken))
        assert report.rps_fractional == 0
        assert report.eps == 0


def test_text_numbers_are_plain_decimals():
    tiny = LoadSnapshot(1e-7, 1234567.5, 0, 0.1 + 0.2, 0, 0, 0, 0, 0, 0, 1e16)
    value = encode_text(tiny)
    assert "e-" not in value and "e+" not in value
    assert "application_utilization=0.0000001," in value
    assert "rps_fractional=1234567.5," in value
    assert "cpu_utilization=0.30000000000000004," in value  # 0.1 + 0.2, not rounded to 0.3
    assert "named_metrics.num_lora_adapters_running=10000000000000000," in value


# Values no short decimal holds: rates over a 10 s window, utilizations, tiny error rates.
AWKWARD = LoadSnapshot(
    application_utilization=2 / 3,
    rps_fractional=30 / 9,
    eps=1 / 9.5,
    cpu_utilization=0.1 + 0.2,
    mem_utilization=0.0123456789,
    num_requests_running=7,
    num_requests_waiting=0,
    num_tokens_running=123456789,
    num_tokens_waiting=0,
    kv_cache_usage_perc=1.234e-5,
    num_lora_adapters_running=1e-7,
    num_lora_adapters_waiting=98765.4321,
)


@pytest.mark.parametrize("snapshot", [AWKWARD, BUSY])
def test_text_carries_the_full_value_as_json_and_bin_do(snapshot: LoadSnapshot):
    """What Envoy reads from TEXT is the very report it reads from BIN and JSON: every value to
    the last bit, none rounded."""
    text, binary, json = (
        parse(encode(snapshot)) for encode in (encode_text, encode_bin, encode_json)
    )
    assert text == binary == json
    for key, value in snapshot.fields().items():
        read = getattr(text, key) if hasattr(text, key) else text.named_metrics[key]
        assert read == value, key  # exact, not approx


# --- byte for byte: the encoders against references built the plain way ---------------------


def reference_number(value: float) -> str:
    """TEXT's number, written out plainly: 0 for what is not finite and positive, an integral
    value below 1e15 as an integer, else the shortest round-trip decimal without exponent."""
    if not 0 < value < math.inf:
        return "0"
    if value == int(value) and value < 10**15:
        return str(int(value))
    text = repr(value)
    return format(Decimal(text), "f") if "e" in text else text


def reference_report(snapshot: LoadSnapshot) -> OrcaLoadReport:
    """A new message of the snapshot: every value finite and positive or 0, the named metrics
    all in the map."""
    values = {
        name: value if math.isfinite(value) and value > 0 else 0.0
        for name, value in zip(LoadSnapshot._fields, snapshot, strict=True)
    }
    return OrcaLoadReport(
        **{k: values[k] for k in TOP_LEVEL},
        named_metrics={k: v for k, v in values.items() if k not in TOP_LEVEL},
    )


def reference(fmt: str, snapshot: LoadSnapshot) -> bytes:
    """The header value as first written: TEXT key by key, JSON and BIN by protobuf
    (`MessageToJson`, `SerializeToString`) from a message built fresh."""
    if fmt == "TEXT":
        named = [f for f in LoadSnapshot._fields if f not in TOP_LEVEL]
        pieces = [f"{k}={reference_number(getattr(snapshot, k))}" for k in TOP_LEVEL]
        pieces += [f"named_metrics.{k}={reference_number(getattr(snapshot, k))}" for k in named]
        return ("TEXT " + ",".join(pieces)).encode()
    report = reference_report(snapshot)
    if fmt == "JSON":
        body = json_format.MessageToJson(report, preserving_proto_field_name=True, indent=None)
        return f"JSON {body}".encode()
    return b"BIN " + base64.b64encode(report.SerializeToString())


# What a snapshot may hold: the awkward values (0 and -0.0, 1 and 1.0, NaN, infinities, the
# 1e15 where TEXT stops writing integers, beyond 2**53, subnormal, the largest double) often,
# so that a sequence repeats them and moves between them, and any float or integer.
SPECIAL = [0, 0.0, -0.0, 1, 1.0, 2, 2.0, -1, -2.5, 0.5, 0.1 + 0.2, 2 / 3, 1e-7, 5e-324,
           math.nan, math.inf, -math.inf, 1e15 - 1, 10**15 - 1, 1e15, 10**15, 1e16, 10**16 + 1,
           2**53 + 1, float(2**53), 1.7976931348623157e308]  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(SPECIAL),
    st.floats(),
    st.integers(min_value=-(10**20), max_value=10**20),
)
SNAPSHOTS = st.builds(LoadSnapshot, *[VALUES] * len(LoadSnapshot._fields))


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(st.lists(st.tuples(SNAPSHOTS, st.sampled_from(FORMATS)), min_size=1, max_size=12))
def test_encoders_are_byte_equal_to_the_reference_through_any_sequence(steps):
    """Snapshot after snapshot, as a server encodes them (an encoder that kept state from one
    snapshot to the next, a message updated in place or memoized pieces, must not show it)."""
    for snapshot, fmt in steps:
        assert ENCODERS[fmt](snapshot).encode("ascii") == reference(fmt, snapshot)
        # The gRPC stream's message too.
        expected = reference_report(snapshot).SerializeToString()
        assert to_report(snapshot).SerializeToString() == expected


def test_every_report_is_a_new_message():
    """A message kept and updated in place can write its map in another order than a new one
    (upb re-inserts a replaced entry), in some processes only, as it depends on the hash seed:
    the property above would catch that in those processes alone."""
    assert to_report(BUSY) is not to_report(BUSY)


def test_tracker_headers_are_byte_equal_to_the_reference():
    """What the middleware sends, snapshot after snapshot, formats in any order."""
    clock = FakeClock()
    tracker = LoadTracker(token_load=TokenLoad(), max_num_seqs=8, clock=clock)
    for step in range(6):
        tracker.record_engine(0, EngineLoad(step % 3, step, step / 7, step % 2))
        tracker.request_finished(200 if step % 2 else 500)
        clock.now += 0.3
        for fmt in (*FORMATS, *reversed(FORMATS)):
            assert tracker.header(fmt) == reference(fmt, tracker.snapshot())


# --- formats ----------------------------------------------------------------------------------


def test_parse_formats_accepts_spaces_commas_any_case_and_dedupes():
    assert parse_formats(["text,json", "BIN", "Text"]) == ("TEXT", "JSON", "BIN")
    assert parse_formats([]) == ()


def test_parse_formats_names_the_bad_value_and_choices():
    with pytest.raises(ValueError, match=r"invalid choice: 'xml' \(choose from TEXT, JSON, BIN\)"):
        parse_formats(["text,xml"])


def test_choose_format_follows_the_request_within_the_enabled_ones():
    enabled = ("JSON", "TEXT")
    assert choose_format(enabled, None) == "JSON"
    assert choose_format(enabled, "tExT") == "TEXT"
    assert choose_format(enabled, " text ") == "TEXT"
    assert choose_format(enabled, "bin") == "JSON"  # disabled: the default, not an error
    assert choose_format(enabled, "garbage") == "JSON"


# --- load tracking ----------------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_rate_window_counts_recent_events_and_forgets_old_ones():
    clock = FakeClock()
    window = RateWindow(seconds=10, clock=clock)
    clock.now += 20  # older than the window: the full 10 s count
    for _ in range(30):
        window.add()
        clock.now += 0.1  # 10 events per second for 3 s
    # 9 full seconds before the current one, which has just begun
    assert window.rate() == pytest.approx(30 / 9)
    clock.now += 10.5
    assert window.rate() == 0.0


def test_rate_window_of_a_young_process_divides_by_its_age():
    clock = FakeClock()
    window = RateWindow(seconds=10, clock=clock)
    clock.now += 0.5
    window.add()
    assert window.rate() == pytest.approx(2.0)


def test_application_utilization_is_the_busier_of_cache_and_slots_and_positive():
    assert application_utilization(0.0, 0, 0, 8) == 0.01
    assert application_utilization(0.6, 2, 0, 8) == 0.6
    assert application_utilization(0.1, 8, 4, 8) == 1.5  # queueing pushes it past 1


def test_tracker_encodes_once_per_snapshot_and_refreshes_on_change():
    clock = FakeClock()
    tokens = TokenLoad()
    tracker = LoadTracker(token_load=tokens, max_num_seqs=8, clock=clock)
    first = tracker.header("TEXT")
    assert tracker.header("TEXT") is first  # cached: no work per response
    tokens.added("r1", 40)
    tracker.request_finished(200)
    tracker.request_finished(503)
    clock.now += 0.5
    assert tracker.header("TEXT") is first  # requests alone do not force a new snapshot
    tracker.record_engine(0, EngineLoad(num_requests_running=1))  # an engine step does
    second = tracker.header("TEXT")
    assert second is not first
    report = parse(second.decode())
    assert report.named_metrics["num_tokens_waiting"] == 40
    assert report.eps > 0
    assert report.rps_fractional >= report.eps
    clock.now += 2  # old: rebuilt even without events, so rates decay while idle
    assert tracker.header("TEXT") is not second
    assert tracker.report() is tracker.report()


def test_rate_window_reads_equal_a_full_recount_whatever_the_interleaving():
    """The sum of the full seconds is kept between reads: every read must still equal a
    recount of the buckets, for events and reads mixed within and across seconds."""
    import random

    rng = random.Random(7)
    clock = FakeClock()
    window = RateWindow(seconds=10, clock=clock)
    events: list[float] = []
    for _ in range(3000):
        clock.now += rng.choice((0.0, 0.01, 0.3, 1.0, 4.0))
        if rng.random() < 0.6:
            window.add()
            events.append(clock.now)
        else:
            second = int(clock.now)
            recount = sum(1 for t in events if second - int(t) < 10)
            span = min(9 + (clock.now - second), clock.now - window.started)
            assert window.rate() == pytest.approx(recount / span)


def test_rate_window_counts_an_event_stamped_before_the_last_read():
    """An event whose clock was read before another thread's read in the next second (the gRPC
    thread reads too) is counted, not left out of the kept sum."""
    clock = FakeClock(100.0)
    window = RateWindow(seconds=10, clock=clock)
    clock.now = 105.5
    assert window.rate() == 0.0  # the sum of the full seconds before 105 kept: none
    clock.now = 104.9  # the adding thread's clock, read before that
    window.add()
    clock.now = 105.6
    assert window.rate() == pytest.approx(1 / 5.6)  # a process 5.6 s old


def test_text_counts_are_exact_integers_small_and_huge():
    snapshot = LoadSnapshot(0.5, 1.25, 0, 0, 0, 7, 0, 10**16 + 1, 123, 0)
    value = encode_text(snapshot)
    assert ",named_metrics.num_requests_running=7," in value
    assert ",named_metrics.num_tokens_running=10000000000000001," in value
    assert ",named_metrics.num_tokens_waiting=123," in value
    assert "eps=0," in value


# --- process sampler --------------------------------------------------------------------------


class FakeTree:
    """Processes as the sampler reads them: pid -> (start time, CPU seconds, RSS bytes)."""

    def __init__(self, procs: dict[int, tuple[int, float, int]]) -> None:
        self.procs = procs
        self.lookups = 0

    def find_pids(self) -> list[int]:
        self.lookups += 1
        return sorted(self.procs)

    def read(self, pid: int):  # type: ignore[no-untyped-def]
        if pid not in self.procs:
            return None
        start, cpu, rss = self.procs[pid]
        return (pid, start), cpu, rss


def make_sampler(tree: FakeTree, clock: FakeClock, refresh_every: int = 30):  # type: ignore[no-untyped-def]
    from vllm_server_ext.process_sampler import ProcessSampler

    tracker = LoadTracker(token_load=TokenLoad(), max_num_seqs=8, clock=clock)
    sampler = ProcessSampler(
        tracker,
        refresh_every=refresh_every,
        find_pids=tree.find_pids,
        read=tree.read,
        clock=clock,
        cpus=2,
        memory=1000,
    )
    return tracker, sampler


def test_sampler_reports_the_trees_cpu_over_the_cpus_and_its_memory():
    clock = FakeClock()
    tree = FakeTree({10: (1, 5.0, 100), 11: (2, 50.0, 300)})
    tracker, sampler = make_sampler(tree, clock)
    sampler.sample()
    assert tracker.cpu_utilization == 0.0  # nothing to compare with yet
    assert tracker.mem_utilization == pytest.approx(0.4)
    tree.procs = {10: (1, 5.5, 100), 11: (2, 51.5, 500)}
    clock.now += 1.0
    sampler.sample()
    assert tracker.cpu_utilization == pytest.approx((0.5 + 1.5) / 1.0 / 2)
    assert tracker.mem_utilization == pytest.approx(0.6)


def test_sampler_looks_the_tree_up_every_refresh_samples_and_after_a_process_ends():
    clock = FakeClock()
    tree = FakeTree({10: (1, 0.0, 1), 11: (2, 0.0, 1)})
    _, sampler = make_sampler(tree, clock, refresh_every=3)
    for _ in range(3):
        clock.now += 1
        sampler.sample()
    assert tree.lookups == 1  # the host-wide walk, not once a sample
    clock.now += 1
    sampler.sample()
    assert tree.lookups == 2
    del tree.procs[11]  # the engine ended: look again at the next sample
    clock.now += 1
    sampler.sample()
    clock.now += 1
    sampler.sample()
    assert tree.lookups == 3


def test_sampler_counts_a_new_or_reused_pid_from_its_first_sample_on():
    clock = FakeClock()
    tree = FakeTree({10: (1, 1.0, 1)})
    tracker, sampler = make_sampler(tree, clock, refresh_every=1)
    sampler.sample()
    tree.procs = {10: (1, 1.5, 1), 12: (3, 100.0, 1)}  # a child started: its past is not ours
    clock.now += 1
    sampler.sample()
    assert tracker.cpu_utilization == pytest.approx(0.5 / 2)
    tree.procs = {10: (1, 2.0, 1), 12: (4, 0.25, 1)}  # pid 12 reused by another process
    clock.now += 1
    sampler.sample()
    assert tracker.cpu_utilization == pytest.approx(0.5 / 2)


def test_sampler_reads_this_process_and_sees_a_busy_child():
    import os
    import subprocess
    import sys
    import time

    import psutil

    from vllm_server_ext.process_sampler import ProcessSampler, read_psutil

    identity, cpu, rss = read_psutil(os.getpid())  # type: ignore[misc]
    assert identity[0] == os.getpid() and cpu > 0
    assert rss == pytest.approx(psutil.Process().memory_info().rss, rel=0.1)
    assert read_psutil(2**22 + 1) is None  # no such process

    tracker = LoadTracker(token_load=TokenLoad(), max_num_seqs=8)
    sampler = ProcessSampler(tracker, cpus=1)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        sampler.sample()
        time.sleep(0.5)
        sampler.sample()
    finally:
        busy.kill()
        busy.wait()
    assert tracker.cpu_utilization > 0.05  # the child's spinning, even on a loaded host
    assert tracker.mem_utilization > 0


@pytest.mark.parametrize("engines", [1, 2])
def test_snapshot_sums_the_engines_and_takes_the_fullest_cache(engines: int):
    tracker = LoadTracker(token_load=TokenLoad(), max_num_seqs=8)
    loads = [EngineLoad(3, 1, 0.25, 1, 0), EngineLoad(2, 4, 0.5, 0, 2)][:engines]
    for i, load in enumerate(loads):
        tracker.record_engine(i, load)
    snapshot = tracker.snapshot()
    assert snapshot.num_requests_running == sum(x.num_requests_running for x in loads)
    assert snapshot.num_requests_waiting == sum(x.num_requests_waiting for x in loads)
    assert snapshot.kv_cache_usage_perc == max(x.kv_cache_usage for x in loads)
    assert snapshot.num_lora_adapters_running == sum(x.num_lora_adapters_running for x in loads)
    assert snapshot.num_lora_adapters_waiting == sum(x.num_lora_adapters_waiting for x in loads)
    running = sum(x.num_requests_running + x.num_requests_waiting for x in loads)
    assert snapshot.application_utilization == max(running / 8, snapshot.kv_cache_usage_perc)
