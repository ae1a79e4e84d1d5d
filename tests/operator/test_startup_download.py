"""Downloads of hf:// and s3:// models as the status tells them (pure): `/ready`'s `download`
object as the operator reads it, hostile values included; the Progressing message and the phase
column while servers download or wait for the shared cache; `status.modelCache`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vllm_operator.clients.vllm_admin import MAX_BYTES, _startup_report
from vllm_operator.model import reasons
from vllm_operator.model.pods import Download, StartupReport
from vllm_operator.model.status import (
    STARTUP_PHASES,
    Condition,
    deployment_conditions,
    deployment_phase,
    model_cache_record,
    size,
    startup_progress,
)
from vllm_server_ext import lifecycle
from vllm_server_ext.download import DownloadProgress
from vllm_testkit.admission import admit
from vllm_testkit.samples import vllmd

URI, SHA = "hf://org/llama", "0123456789abcdef0123456789abcdef01234567"
GB, MINUTE = 10**9, 60
T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"
DOWNLOAD = {
    "source": URI, "revision": SHA, "bytes": 57 * GB, "total_bytes": 140 * GB,
    "fetched_bytes": 50 * GB, "bytes_per_second": 1.5e8, "eta_seconds": 553.3, "complete": False,
}  # fmt: skip
READY = {
    "ready": False, "phase": "downloading", "instance_id": "abc", "model": URI,
    "uptime_seconds": 200.5, "startup_seconds": {"starting": 0.1, "downloading": 180.2},
}  # fmt: skip


def read(download: Any) -> StartupReport | None:
    return _startup_report(json.dumps({**READY, "download": download}).encode())


def test_the_servers_own_download_object_is_read():
    """What vllm-ext-serve's DownloadProgress describes, as the operator reads it."""
    progress = DownloadProgress(URI)
    progress.start(total=140 * GB, present=57 * GB, revision=SHA)
    report = read(progress.describe())
    assert report.download == Download(URI, SHA, 57 * GB, 140 * GB, None, False)
    progress.finish()
    assert read(progress.describe()).download == Download(URI, SHA, 140 * GB, 140 * GB, None, True)
    s3 = DownloadProgress("s3://bucket/m")  # no revision, no total yet
    assert read(s3.describe()).download == Download("s3://bucket/m", None, 0, None, None, False)


def test_a_download_is_read_with_its_time_left():
    report = read(DOWNLOAD)
    assert (report.phase, report.phase_seconds) == ("downloading", 180.2)
    assert report.download == Download(URI, SHA, 57 * GB, 140 * GB, 553.3, False)
    assert _startup_report(json.dumps(READY).encode()).download is None  # a path, a pvc://


@pytest.mark.parametrize(
    "change",
    [
        "not an object", ["a", "list"], None, 5,
        {"source": 5}, {"source": ""}, {"source": "x" * 1025}, {"source": None},
        {"revision": 12}, {"revision": "a" * 257}, {"revision": ""}, {"revision": "a b"},
        {"revision": "\u00e9t\u00e9"}, {"revision": "a\nb"},
        {"bytes": -1}, {"bytes": 1.5}, {"bytes": True}, {"bytes": "57"}, {"bytes": None},
        {"bytes": MAX_BYTES + 1}, {"bytes": 10**400}, {"bytes": 1e300},
        {"total_bytes": -5}, {"total_bytes": "140 GB"}, {"total_bytes": False},
        {"total_bytes": float("inf")},
        {"eta_seconds": -1}, {"eta_seconds": "soon"}, {"eta_seconds": float("nan")},
        {"eta_seconds": float("inf")}, {"eta_seconds": 1e300}, {"eta_seconds": True},
        {"complete": "yes"}, {"complete": 1}, {"complete": None},
    ],
    ids=repr,
)  # fmt: skip
def test_a_malformed_download_is_ignored_and_the_report_stands(change: Any):
    download = {**DOWNLOAD, **change} if isinstance(change, dict) else change
    report = read(download)  # json.dumps writes NaN and Infinity, as a hostile pod may
    assert report is not None
    assert (report.phase, report.uptime_seconds, report.download) == ("downloading", 200.5, None)


def test_fields_the_status_does_not_use_are_not_checked():
    """fetched_bytes, bytes_per_second and filled_by are the server's to show, not ours."""
    extra = {**DOWNLOAD, "fetched_bytes": "x", "bytes_per_second": None, "filled_by": [1]}
    assert read(extra).download == read(DOWNLOAD).download


def test_the_largest_sizes_fit_the_status_and_are_exact():
    assert read({**DOWNLOAD, "bytes": MAX_BYTES, "total_bytes": MAX_BYTES}).download.bytes == (
        MAX_BYTES
    )
    assert MAX_BYTES < 2**63  # sizeBytes is an int64


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (1999, "1.9 kB"), (10_500, "10 kB"),
     (999_999, "999 kB"), (1_500_000, "1.5 MB"), (140 * GB, "140 GB"), (int(9.99 * GB), "9.9 GB"),
     (2 * 10**12, "2.0 TB"), (3 * 10**15, "3000 TB")],
)  # fmt: skip
def test_sizes_read_at_a_glance(count: int, text: str):
    assert size(count) == text


def report(phase: str, seconds: float, download: Download | None = None) -> StartupReport:
    return StartupReport(phase, seconds, seconds + 1, None, download)


def downloading(present: int, total: int | None, eta: float | None) -> Download:
    return Download(URI, SHA, present, total, eta, False)


def test_the_progress_message_tells_the_downloads_share_size_and_time_left():
    starting = {
        "m-0": report("downloading", 3 * MINUTE, downloading(int(57.9 * GB), 140 * GB, 8 * MINUTE)),
        "m-1": report("waiting_for_cache", 3 * MINUTE, downloading(57 * GB, 140 * GB, None)),
        "m-2": report("loading_model", 40, Download(URI, SHA, 140 * GB, 140 * GB, None, True)),
    }
    assert startup_progress(4, starting) == Condition(
        "Progressing", True, reasons.LOADING_MODEL,
        "3/4 replicas starting: waiting_for_cache for 3m00s, downloading 41 % of 140 GB for "
        "3m00s (8m00s left), loading_model for 40s",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("download", "text"),
    [
        (downloading(12_500_000_000, None, None), "downloading 12 GB for 1m00s"),
        (downloading(5 * GB, 140 * GB, None), "downloading 3 % of 140 GB for 1m00s"),
        (downloading(0, 0, None), "downloading 0 B for 1m00s"),  # an empty total: no share
        (downloading(150 * GB, 140 * GB, 0), "downloading 100 % of 140 GB for 1m00s (0s left)"),
        (None, "downloading for 1m00s"),  # a report from before the download's start
    ],
)
def test_a_download_without_a_total_or_a_rate_says_what_it_knows(download, text):
    message = startup_progress(1, {"m-0": report("downloading", MINUTE, download)}).message
    assert message == f"1/1 replicas starting: {text}"


def test_the_phase_words_of_the_download_phases_and_the_least_advanced_wins():
    for starting, phase in [
        ({"m-0": report("downloading", 1), "m-1": report("profiling", 1)}, "Downloading"),
        ({"m-0": report("downloading", 1), "m-1": report("waiting_for_cache", 1)},
         "WaitingForCache"),
        ({"m-0": report("importing", 1), "m-1": report("downloading", 1)}, "Downloading"),
        ({"m-0": report("starting", 1), "m-1": report("downloading", 1)}, "Starting"),
    ]:  # fmt: skip
        deployment = {"status": {"readyReplicas": 0, "updatedReplicas": 2}}
        progress = startup_progress(2, starting)
        assert progress.reason == reasons.LOADING_MODEL
        conditions = deployment_conditions(2, deployment, None, progress)
        assert deployment_phase(2, conditions, starting) == phase


def test_the_startup_phases_are_the_servers_in_its_order():
    """joining_group comes and goes within loading_model (the server ranks it so)."""
    ours = [phase for phase in STARTUP_PHASES if phase != "joining_group"]
    assert ours == [phase.value for phase in lifecycle.STARTUP_PHASES]
    assert list(STARTUP_PHASES)[: ours.index("importing")] == [
        "starting", "waiting_for_cache", "downloading",
    ]  # fmt: skip


# --- status.modelCache --------------------------------------------------------------------------


def done(source: str = URI, revision: str | None = SHA, present: int = 140 * GB) -> StartupReport:
    return report("loading_model", 5, Download(source, revision, present, present, None, True))


def test_a_complete_download_of_the_specs_model_is_recorded():
    record = model_cache_record(None, URI, {"m-0": done(), "m-1": None}, now=T0)
    assert record == {"model": URI, "revision": SHA, "sizeBytes": 140 * GB, "readyTime": T0}
    s3 = model_cache_record(None, "s3://b/m", {"m-0": done("s3://b/m", None, 7)}, now=T0)
    assert s3 == {"model": "s3://b/m", "sizeBytes": 7, "readyTime": T0}  # no revision


def test_no_record_before_the_download_completes_or_of_another_model():
    unfinished = report("downloading", 5, downloading(GB, 140 * GB, 60))
    assert model_cache_record(None, URI, {"m-0": unfinished}, now=T0) is None
    assert model_cache_record(None, URI, {"m-0": done("hf://org/other")}, now=T0) is None
    assert model_cache_record(None, URI, {}, now=T0) is None


def test_the_record_stays_across_rounds_and_is_replaced_by_another_model_or_revision():
    first = model_cache_record(None, URI, {"m-0": done()}, now=T0)
    # Pods that serve are asked no more: the record stands (it is the volume's, not the pods').
    assert model_cache_record(first, URI, {}, now=T1) == first
    # The same download seen again (another pod, a restart) keeps its time.
    assert model_cache_record(first, URI, {"m-1": done()}, now=T1) == first
    # The spec moved on and its download has not completed yet: the cache still holds the first.
    assert model_cache_record(first, "hf://org/next", {"m-0": done()}, now=T1) == first
    newer = model_cache_record(first, URI, {"m-0": done(revision="f" * 40)}, now=T1)
    assert newer == {"model": URI, "revision": "f" * 40, "sizeBytes": 140 * GB, "readyTime": T1}
    other = model_cache_record(newer, "s3://b/m", {"m-0": done("s3://b/m", None, 9)}, now=T1)
    assert other == {"model": "s3://b/m", "sizeBytes": 9, "readyTime": T1}


def test_no_cache_no_record():
    first = model_cache_record(None, URI, {"m-0": done()}, now=T0)
    assert model_cache_record(first, None, {"m-0": done()}, now=T1) is None


def test_the_record_is_what_the_crds_status_schema_admits():
    record = model_cache_record(None, URI, {"m-0": done(present=MAX_BYTES)}, now=T0)
    body = {**vllmd("m", {"model": {"uri": URI}}), "status": {"modelCache": record}}
    assert admit("VLLMDeployment", body) == []
    for bad in ({"sizeBytes": -1}, {"sizeBytes": "2 GB"}, {"revision": "r" * 257}):
        body["status"]["modelCache"] = {**record, **bad}
        assert admit("VLLMDeployment", body) != [], bad
    body["status"]["modelCache"] = {"model": URI}  # a record has its size and time
    assert admit("VLLMDeployment", body) != []
