"""The download's parts that need no model server: URIs, progress, the shared cache's lock, the
command line (a bad URI is a one-line error before anything is fetched)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vllm_server_ext.download import (
    CacheFill,
    DownloadProgress,
    Source,
    SourceError,
    parse_source,
)
from vllm_server_ext.lifecycle import STARTUP_PHASES, Phase, ServerState, StateCollector
from vllm_testkit.servers import run_cli


@pytest.mark.parametrize(
    ("uri", "scheme", "location"),
    [
        ("hf://org/name", "hf", "org/name"),
        ("hf://Org-1/na.me_2", "hf", "Org-1/na.me_2"),
        ("s3://bucket/prefix/model", "s3", "bucket/prefix/model"),
        ("s3://my.bucket-1/", "s3", "my.bucket-1"),
        ("s3://bucket", "s3", "bucket"),
    ],
)
def test_sources_the_server_downloads(uri: str, scheme: str, location: str):
    source = parse_source(uri)
    assert source is not None and (source.scheme, source.location) == (scheme, location)


@pytest.mark.parametrize("model", ["/models/x", "org/name", "./rel", "pvc://claim/x", "oci://r/x"])
def test_other_models_are_vllms_business(model: str):
    assert parse_source(model) is None


@pytest.mark.parametrize(
    "uri",
    ["hf://name", "hf://org/name/extra", "hf://org/..", "hf://", "s3://", "s3://B/x",
     "s3://ab/x", "s3://bucket/../etc", "s3://bucket/a//b", "s3://-bucket/x"],
)  # fmt: skip
def test_malformed_uris_are_refused(uri: str):
    with pytest.raises(SourceError, match="invalid model"):
        parse_source(uri)


def test_progress_never_goes_back_and_reports_rate_and_time_left(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    progress = DownloadProgress("hf://org/name")
    progress.start(total=1000, present=100, revision="a" * 40)
    for _ in range(4):
        clock[0] += 1.0
        progress.add(100)
        progress.received(100)
    body = progress.describe()
    assert body["bytes"] == 500 and body["total_bytes"] == 1000 and body["fetched_bytes"] == 400
    assert body["bytes_per_second"] == pytest.approx(100.0)
    assert body["eta_seconds"] == pytest.approx(5.0)
    assert body["complete"] is False and body["revision"] == "a" * 40
    # A filler's report behind this one's (or a resumed file's bytes counted again) is ignored.
    progress.mirror({"bytes": 200, "total_bytes": 1000}, "pod-a")
    assert progress.bytes == 500 and progress.describe()["filled_by"] == "pod-a"
    progress.finish()
    done = progress.describe()
    assert done["bytes"] == 1000 and done["complete"] and done["eta_seconds"] is None
    assert "filled_by" not in done


def test_rate_covers_the_recent_window_only(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    progress = DownloadProgress("s3://bucket/x")
    progress.start(total=10_000, present=0)
    for _ in range(30):  # fast at first, then 10 B/s for 20 s
        clock[0] += 1.0
        progress.add(1000 if clock[0] <= 5 else 10)
    assert progress.rate() == pytest.approx(10.0, rel=0.15)


def test_a_mirrored_report_of_another_shape_is_ignored():
    progress = DownloadProgress("hf://org/name")
    progress.mirror({"bytes": "lots", "total_bytes": None}, None)
    assert progress.bytes == 0 and progress.total is None


def test_download_phases_come_first_and_show_in_ready_and_metrics():
    assert STARTUP_PHASES[:4] == (
        Phase.STARTING, Phase.WAITING_FOR_CACHE, Phase.DOWNLOADING, Phase.IMPORTING
    )  # fmt: skip
    state = ServerState()
    state.enter(Phase.DOWNLOADING)
    state.download = DownloadProgress("hf://org/name")
    state.download.start(total=2048, present=512)
    assert state.describe()["download"]["bytes"] == 512
    metrics = {m.name: m.samples[0].value for m in StateCollector(state).collect()}  # type: ignore[attr-defined]
    assert metrics["vllm:startup_download_bytes"] == 512
    assert metrics["vllm:startup_download_total_bytes"] == 2048
    state.enter(Phase.WAITING_FOR_CACHE)  # startup phases only move forward
    assert state.phase == Phase.DOWNLOADING


HOLDER = """
import sys, time
from pathlib import Path
from vllm_server_ext.download import CacheFill, parse_source
fill = CacheFill(Path(sys.argv[1]), parse_source(sys.argv[2]))
print(fill.try_acquire(), flush=True)
time.sleep(60)
"""


def test_one_filler_per_source_across_processes_and_a_dead_one_lets_go(tmp_path: Path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path), "hf://org/name"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "True\n"
        mine = CacheFill(tmp_path, Source("hf://org/name", "hf", "org/name"))
        other = CacheFill(tmp_path, Source("hf://org/other", "hf", "org/other"))
        assert not mine.try_acquire()
        assert other.try_acquire()  # another source: its own lock
        holder.send_signal(signal.SIGKILL)  # the kernel releases a dead holder's lock
        holder.wait(30)
        assert mine.try_acquire()
        mine.release()
        other.release()
    finally:
        holder.kill()
        holder.wait(30)


def test_the_filler_publishes_its_progress_for_the_waiters(tmp_path: Path):
    source = Source("s3://bucket/m", "s3", "bucket/m")
    filler, waiter = CacheFill(tmp_path, source), CacheFill(tmp_path, source)
    assert filler.try_acquire()
    progress = DownloadProgress(source.uri)
    progress.start(total=100, present=40)
    filler.publish(progress)
    try:
        deadline = time.monotonic() + 10
        while not (seen := waiter.read_progress())[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        data, by = seen
        assert data["bytes"] == 40 and data["total_bytes"] == 100 and by
    finally:
        filler.release()
    assert waiter.try_acquire()
    waiter.release()


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("hf://just-a-name", "argument --model: invalid model 'hf://just-a-name': expected hf://ORG/NAME"),
        ("s3://UPPER/x", "argument --model: invalid model 's3://UPPER/x': expected s3://BUCKET/PREFIX"),
    ],
)  # fmt: skip
def test_a_malformed_model_uri_is_one_line(model: str, expected: str):
    result = run_cli(model, "--port", "0")
    assert result.returncode == 2
    assert result.stderr == f"vllm-ext-serve: error: {expected}\n"


def test_the_first_failure_stops_the_other_files_at_once():
    from vllm_server_ext.download import _all_or_nothing

    def fetch(item: str, stop) -> str:
        if item == "bad":
            raise RuntimeError("refused")
        while not stop.wait(0.01):  # a long file, checking between chunks
            pass
        raise AssertionError("stopped")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="refused"):
        _all_or_nothing(fetch, ["big-1", "bad", "big-2"], "test")
    assert time.monotonic() - started < 5
    assert _all_or_nothing(lambda item, stop: item * 2, [1, 2, 3], "test") == [2, 4, 6]
