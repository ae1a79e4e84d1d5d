"""Cold start from hf:// and s3:// against local stand-ins for the Hub and for S3, throttled so
that progress shows: real `vllm-ext-serve` processes download, resume, share a cache, and serve.

Most tests stop each server once its download is over (it is then importing vLLM); the first
goes on to serve a completion from what it downloaded.
"""

from __future__ import annotations

import filecmp
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from vllm_testkit.hub_standin import HubStandIn
from vllm_testkit.s3_standin import S3StandIn, moto_server_path
from vllm_testkit.servers import ServerProcess
from vllm_testkit.tiny_model import CPU_ARGS

REPO = "tiny-org/tiny-llama"
# Slow enough that a 2.3 MB model takes several seconds, with many progress reports.
SLOW = 300_000

needs_moto = pytest.mark.skipif(
    moto_server_path() is None,
    reason="moto is not installed at .venv-moto: `make moto` installs it (its S3 server)",
)


def model_bytes(model: Path) -> int:
    return sum(f.stat().st_size for f in model.iterdir() if f.is_file())


@pytest.fixture
def hub(tiny_model: Path) -> Iterator[HubStandIn]:
    with HubStandIn() as hub:
        yield hub


def hub_server(hub: HubStandIn, home: Path, log: Path, *extra: str) -> ServerProcess:
    """A server of `hf://REPO` whose Hub is the stand-in and whose cache is `home`."""
    argv = [sys.executable, "-m", "vllm_server_ext", f"hf://{REPO}", *CPU_ARGS, *extra]
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(home)}
    return ServerProcess(argv, log, env=env)


def ready_body(server: ServerProcess, client: httpx.Client) -> dict | None:
    try:
        return client.get(f"{server.url}/ready").json()
    except (httpx.TransportError, ValueError):
        return None


def watch(
    server: ServerProcess, until: Callable[[dict], bool], timeout: float = 120.0
) -> list[dict]:
    """`/ready` bodies every 50 ms until `until(body)`; fails if the server exits first."""
    assert server.proc is not None
    bodies: list[dict] = []
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                pytest.fail(f"server exited with {server.proc.returncode}:\n{server.log()[-3000:]}")
            body = ready_body(server, client)
            if body is not None:
                bodies.append(body)
                if until(body):
                    return bodies
            time.sleep(0.05)
    pytest.fail(f"timed out; last /ready: {bodies[-1:]}\n{server.log()[-3000:]}")


def past_download(body: dict) -> bool:
    return body.get("phase") not in ("starting", "waiting_for_cache", "downloading")


def kill_mid_download(server: ServerProcess, total: int) -> None:
    """Start `server` and SIGKILL it past 40 % of its download, as when its pod dies: no chance
    to clean up."""
    server.start()
    try:
        watch(server, lambda b: b.get("download", {}).get("bytes", 0) > total * 0.4)
    finally:
        server.stop(signal.SIGKILL)


def download_of(server: ServerProcess) -> dict:
    """Start `server`, wait until its download is over, stop it: its `/ready`'s `download`."""
    server.start()
    try:
        return watch(server, past_download)[-1]["download"]
    finally:
        server.stop()


def progress_of(bodies: list[dict]) -> list[int]:
    return [b["download"]["bytes"] for b in bodies if "download" in b]


def assert_observable_progress(bodies: list[dict], total: int) -> None:
    seen = progress_of(bodies)
    assert seen == sorted(seen), "bytes went back"
    partial = {b for b in seen if 0 < b < total}
    assert len(partial) >= 3, f"too few progress reports in between: {sorted(partial)}"
    rates = [b["download"]["bytes_per_second"] for b in bodies if b.get("phase") == "downloading"]
    assert max(rates) > 0
    assert any(b["download"]["eta_seconds"] for b in bodies if b.get("phase") == "downloading")


def snapshot_dir(home: Path, revision: str) -> Path:
    return home / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots" / revision


def same_files(a: Path, b: Path) -> bool:
    """`b` holds exactly `a`'s files (beside the downloader's own record, a dot file)."""
    names = sorted(f.name for f in a.iterdir() if f.is_file())
    _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    held = sorted(f.name for f in b.iterdir() if not f.name.startswith("."))
    return not mismatch and not errors and held == names


@pytest.mark.vllm
def test_hf_model_downloads_with_progress_then_serves(hub: HubStandIn, tiny_model: Path,
                                                      tmp_path: Path):  # fmt: skip
    total, commit = model_bytes(tiny_model), hub.add_repo(REPO, tiny_model)
    hub.rate = SLOW
    server = hub_server(hub, tmp_path / "home", tmp_path / "server.log", "--revision", "main")
    server.start()
    try:
        bodies = watch(server, past_download)
        phases = [b["phase"] for b in bodies]
        assert "downloading" in phases and phases.index("downloading") < len(phases) - 1
        assert_observable_progress(bodies, total)
        with httpx.Client(timeout=5) as client:
            metrics = client.get(f"{server.url}/metrics").text
        samples = {
            s.name: s.value for f in text_string_to_metric_families(metrics) for s in f.samples
        }
        assert samples["vllm:startup_download_total_bytes"] == total
        assert samples["vllm:startup_download_bytes"] == total
        server.wait_ready(timeout=300)
        with httpx.Client(timeout=60) as client:
            body = client.get(f"{server.url}/ready").json()
            download = body["download"]
            assert download["complete"] and download["bytes"] == total
            assert download["fetched_bytes"] == total == hub.body_bytes
            assert download["revision"] == commit
            # Served under ORG/NAME, as `vllm serve ORG/NAME` would, from the local copy.
            models = client.get(f"{server.url}/v1/models").json()
            assert [m["id"] for m in models["data"]] == [REPO]
            answer = client.post(
                f"{server.url}/v1/completions",
                json={"model": REPO, "prompt": "the quick brown fox", "max_tokens": 4},
            )
            assert answer.status_code == 200, answer.text
        assert same_files(tiny_model, snapshot_dir(tmp_path / "home", download["revision"]))
    finally:
        server.stop()


def test_a_killed_download_resumes_and_a_new_revision_fetches_only_what_changed(
    hub: HubStandIn, tiny_model: Path, tmp_path: Path
):
    total, home = model_bytes(tiny_model), tmp_path / "home"
    first_commit = hub.add_repo(REPO, tiny_model)
    hub.rate = SLOW
    kill_mid_download(hub_server(hub, home, tmp_path / "first.log"), total)
    assert hub.body_bytes < total

    hub.rate = None
    download = download_of(hub_server(hub, home, tmp_path / "second.log"))
    assert download["complete"] and download["bytes"] == total
    assert download["revision"] == first_commit
    # Only the rest came over the network, asked for with a ranged request for the partial file.
    ranges = [rng for _, path, rng in hub.requests if path.endswith("model.safetensors") and rng]
    assert len(ranges) == 1 and (start := int(ranges[0].removeprefix("bytes=").rstrip("-")))
    assert start > 0.3 * (tiny_model / "model.safetensors").stat().st_size
    assert 0 < download["fetched_bytes"] <= total - start
    assert same_files(tiny_model, snapshot_dir(home, download["revision"]))

    # main moves on: a changed config only. The next start pins the new commit and fetches
    # the one file that changed (the cache keeps files by content).
    changed = tmp_path / "v2"
    changed.mkdir()
    for f in tiny_model.iterdir():
        (changed / f.name).write_bytes(f.read_bytes())
    config = json.loads((changed / "config.json").read_text())
    (changed / "config.json").write_text(json.dumps({**config, "v": 2}))
    new_commit = hub.add_repo(REPO, changed)
    download = download_of(hub_server(hub, home, tmp_path / "third.log"))
    assert download["revision"] == new_commit != first_commit
    assert download["fetched_bytes"] == (changed / "config.json").stat().st_size


def test_replicas_sharing_a_cache_download_once(hub: HubStandIn, tiny_model: Path,
                                                tmp_path: Path):  # fmt: skip
    total, home = model_bytes(tiny_model), tmp_path / "shared"
    hub.add_repo(REPO, tiny_model)
    hub.rate = SLOW
    first = hub_server(hub, home, tmp_path / "first.log")
    second = hub_server(hub, home, tmp_path / "second.log")
    first.start()
    try:
        watch(first, lambda b: b.get("phase") == "downloading")
        second.start()
        waiting = watch(second, lambda b: b.get("phase") == "waiting_for_cache")[-1]
        assert waiting["download"]["source"] == f"hf://{REPO}"
        # The waiter reports the filler's progress, naming it.
        bodies = watch(second, past_download)
        filler = [b["download"] for b in bodies if b.get("phase") == "waiting_for_cache"]
        assert {d.get("filled_by") for d in filler} - {None}
        assert len({d["bytes"] for d in filler if 0 < d["bytes"] < total}) >= 2
        done = watch(first, past_download)[-1]["download"]
        second_done = bodies[-1]["download"]
    finally:
        first.stop()
        second.stop()
    assert done["fetched_bytes"] == total and second_done["fetched_bytes"] == 0
    assert second_done["complete"] and second_done["revision"] == done["revision"]
    assert hub.body_bytes == total  # fetched once for both


def test_sigterm_stops_a_download_at_once(hub: HubStandIn, tiny_model: Path, tmp_path: Path):
    hub.add_repo(REPO, tiny_model)
    hub.rate = 50_000
    server = hub_server(hub, tmp_path / "home", tmp_path / "server.log")
    server.start()
    watch(server, lambda b: b.get("download", {}).get("bytes", 0) > 0)
    started = time.monotonic()
    assert server.stop(signal.SIGTERM, timeout=30) == 0
    assert time.monotonic() - started < 10
    assert "interrupted" in server.log()


# --- S3 -------------------------------------------------------------------------------------


@pytest.fixture
def s3(tiny_model: Path) -> Iterator[S3StandIn]:
    with S3StandIn() as s3:
        s3.upload_dir("models", "tiny/v1/", tiny_model)
        yield s3


def s3_server(s3: S3StandIn, home: Path, log: Path, *extra: str) -> ServerProcess:
    argv = [sys.executable, "-m", "vllm_server_ext", "s3://models/tiny/v1", *CPU_ARGS, *extra]
    return ServerProcess(argv, log, env={**s3.env(), "HF_HOME": str(home)})


@needs_moto
def test_s3_model_downloads_with_progress_into_the_layout_vllm_loads(
    s3: S3StandIn, tiny_model: Path, tmp_path: Path
):
    # Stopped once the download is over: a directory of the model's files is what every other
    # server test serves from.
    total, home = model_bytes(tiny_model), tmp_path / "home"
    s3.rate = SLOW
    server = s3_server(s3, home, tmp_path / "server.log")
    server.start()
    try:
        bodies = watch(server, past_download)
    finally:
        server.stop()
    assert_observable_progress(bodies, total)
    download = bodies[-1]["download"]
    assert download["complete"] and download["fetched_bytes"] == total
    assert download["source"] == "s3://models/tiny/v1" and download["revision"] is None
    assert bodies[-1]["model"] == "models/tiny/v1"  # served as BUCKET/PREFIX by default
    assert same_files(tiny_model, home / "s3" / "models" / "tiny" / "v1")
    assert s3.bytes_down >= total


@needs_moto
def test_a_killed_s3_download_resumes(s3: S3StandIn, tiny_model: Path, tmp_path: Path):
    total, home = model_bytes(tiny_model), tmp_path / "home"
    s3.rate = SLOW
    kill_mid_download(s3_server(s3, home, tmp_path / "first.log"), total)
    s3.rate = None
    download = download_of(s3_server(s3, home, tmp_path / "second.log"))
    assert download["complete"] and 0 < download["fetched_bytes"] < total * 0.7
    assert same_files(tiny_model, home / "s3" / "models" / "tiny" / "v1")


@needs_moto
def test_s3_errors_are_one_line_failures(s3: S3StandIn, tmp_path: Path):
    server = ServerProcess(
        [sys.executable, "-m", "vllm_server_ext", "s3://models/nothing-here", *CPU_ARGS],
        tmp_path / "server.log",
        env={**s3.env(), "HF_HOME": str(tmp_path / "home")},
    )
    server.start()
    assert server.proc is not None
    assert server.proc.wait(60) == 1
    assert "server failed: s3://models/nothing-here: no objects under this prefix" in server.log()


@needs_moto
def test_an_s3_key_that_leaves_the_prefix_is_refused_before_anything_is_written(
    s3: S3StandIn, tmp_path: Path
):
    s3.put_any_key("models", "tiny/v1/../../../../escaped.json", b"{}")
    home = tmp_path / "home"
    server = s3_server(s3, home, tmp_path / "server.log")
    server.start()
    assert server.proc is not None
    assert server.proc.wait(60) == 1
    assert "object 'tiny/v1/../../../../escaped.json' leaves the prefix" in server.log()
    assert not list(tmp_path.rglob("escaped.json"))
    assert not list((home / "s3" / "models" / "tiny" / "v1").glob("*.json"))
