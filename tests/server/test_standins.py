"""The stand-ins for the Hugging Face Hub and S3 that the model download tests use, checked against
the real clients: huggingface_hub's `snapshot_download` / `hf_hub_download` (in this process and,
with HF_ENDPOINT, in a child) and minio through the throttling proxy. A few seconds; no vLLM.

The S3 tests need moto (`make moto`); without it they are skipped, saying so."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils._runtime import is_xet_available
from minio import Minio

from vllm_testkit.hub_standin import HubStandIn
from vllm_testkit.s3_standin import MISSING, S3StandIn, moto_server_path

# The Hub here is the stand-in: huggingface_hub online in this process, whatever `make test` sets.
pytestmark = pytest.mark.usefixtures("hub_online")

MiB = 1024 * 1024
# huggingface_hub's child: HF_ENDPOINT (from the environment) is the only way it finds the Hub.
CHILD = "import sys; from huggingface_hub import snapshot_download as s; print(s(sys.argv[1], cache_dir=sys.argv[2]))"


def files_of(directory: str | Path) -> dict[str, bytes]:
    root = Path(directory)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def hub() -> Iterator[HubStandIn]:
    with HubStandIn() as hub:
        yield hub


def test_snapshot_download_gets_every_file_byte_for_byte_over_plain_http(
    hub, tiny_model, tmp_path, monkeypatch
):
    assert is_xet_available()  # hf_xet is installed: the stand-in alone keeps it out of the way

    def no_xet(**kwargs):
        raise AssertionError(f"Xet download of {kwargs.get('displayed_filename')}")

    monkeypatch.setattr("huggingface_hub.file_download.xet_get", no_xet)
    sha = hub.add_repo("org/tiny", tiny_model)

    path = snapshot_download("org/tiny", endpoint=hub.url, cache_dir=tmp_path)

    expected = files_of(tiny_model)
    assert Path(path).name == sha and len(sha) == 40
    assert files_of(path) == expected
    assert hub.file_bytes == {f"org/tiny/{name}": len(data) for name, data in expected.items()}
    resolved = {(m, p.rsplit("/", 1)[1]) for m, p, _ in hub.requests if "/resolve/" in p}
    # Each file's metadata (HEAD, where Xet would be announced) and body came from /resolve.
    assert resolved == {(m, name) for m in ("HEAD", "GET") for name in expected}


def test_dry_run_reports_sizes_and_the_commit_and_downloads_nothing(hub, tiny_model, tmp_path):
    sha = hub.add_repo("org/tiny", tiny_model)

    infos = snapshot_download("org/tiny", endpoint=hub.url, cache_dir=tmp_path, dry_run=True)

    sizes = {name: len(data) for name, data in files_of(tiny_model).items()}
    assert {i.filename: i.file_size for i in infos} == sizes
    assert {i.commit_hash for i in infos} == {sha}
    assert all(i.will_download and not i.is_cached for i in infos)
    assert hub.body_bytes == 0


def test_a_commit_sha_pins_its_snapshot_after_main_moves(hub, tiny_model, tmp_path):
    v2 = shutil.copytree(tiny_model, tmp_path / "v2")
    (v2 / "config.json").write_text((v2 / "config.json").read_text().replace("128", "129"))
    sha1 = hub.add_repo("org/tiny", tiny_model)
    # The same files, the same sha: a tag on them is the same commit.
    assert hub.add_repo("org/tiny", tiny_model, revision="v1") == sha1
    sha2 = hub.add_repo("org/tiny", v2)  # main moves
    assert sha2 != sha1

    def download(revision: str) -> str:
        return snapshot_download(
            "org/tiny", revision=revision, endpoint=hub.url, cache_dir=tmp_path / "cache"
        )

    assert files_of(download(sha1)) == files_of(tiny_model)
    assert files_of(download("v1")) == files_of(tiny_model)
    assert Path(download("main")).name == sha2
    assert files_of(download("main")) == files_of(v2)


def test_unknown_repos_revisions_and_files_raise_the_hubs_errors(hub, tiny_model, tmp_path):
    sha = hub.add_repo("org/tiny", tiny_model)
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("org/missing", endpoint=hub.url, cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        snapshot_download("org/tiny", revision="v9", endpoint=hub.url, cache_dir=tmp_path)
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("org/tiny", "missing.json", endpoint=hub.url, cache_dir=tmp_path)
    # The Hub names the commit in its 404, so huggingface_hub caches that the file does not exist.
    assert (tmp_path / "models--org--tiny" / ".no_exist" / sha / "missing.json").exists()


def test_tree_pages_and_folders_are_listed_as_the_hub_does(hub, tmp_path):
    repo = tmp_path / "repo"
    for name, data in {"a.json": b"{}", "b/c.json": b"[]", "b/d/e.bin": b"\1" * 3000}.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(data)
    hub.add_repo("org/folders", repo)
    hub.page_size = 2  # 5 entries, the folders b and b/d among them: 3 pages

    path = snapshot_download("org/folders", endpoint=hub.url, cache_dir=tmp_path / "cache")

    assert files_of(path) == files_of(repo)
    tree_pages = [p for m, p, _ in hub.requests if "/tree/" in p]
    assert len(tree_pages) == 3 and "cursor=4" in tree_pages[-1]


@pytest.mark.parametrize(
    ("size", "drop_after", "resumed_from"),
    [
        # huggingface_hub writes a body in 10 MiB chunks: a drop loses the part chunk it holds and
        # the retry asks for the rest from the last whole one ...
        (11 * MiB, 10 * MiB + MiB // 2, 10 * MiB),
        # ... so a file under 10 MiB is fetched whole again, without a Range.
        (MiB, MiB // 2, None),
    ],
)
def test_a_dropped_body_is_retried_from_what_the_client_kept(
    hub, tmp_path, size, drop_after, resumed_from
):
    repo = tmp_path / "repo"
    repo.mkdir()
    data = os.urandom(size)
    (repo / "model.safetensors").write_bytes(data)
    hub.add_repo("org/big", repo)
    hub.drop_next_body(after=drop_after)

    path = hf_hub_download(
        "org/big", "model.safetensors", endpoint=hub.url, cache_dir=tmp_path / "c"
    )

    assert Path(path).read_bytes() == data
    gets = [r for m, p, r in hub.requests if m == "GET" and p.endswith("/model.safetensors")]
    if resumed_from is None:
        assert gets == [None, None]
        assert hub.body_bytes == drop_after + size
    else:
        assert gets == [None, f"bytes={resumed_from}-"]
        assert hub.body_bytes == drop_after + size - resumed_from  # the retry sent only the rest


def test_the_throttle_slows_a_download(hub, tiny_model, tmp_path):
    hub.add_repo("org/tiny", tiny_model)
    size = sum(len(d) for d in files_of(tiny_model).values())
    hub.rate = size / 0.5  # half a second for the whole snapshot

    started = time.monotonic()
    snapshot_download("org/tiny", endpoint=hub.url, cache_dir=tmp_path)

    assert time.monotonic() - started >= 0.7 * size / hub.rate  # no upper bound: machines are noisy
    assert hub.body_bytes == size


def test_a_killed_download_starts_over_in_the_next_process(hub, tiny_model, tmp_path):
    """huggingface_hub 2.4 downloads into a temporary file unique to the process (and writes it in
    10 MiB steps): one killed mid-file leaves an orphan `.incomplete` that the next process does
    not use, so the next asks for the whole file."""
    sha = hub.add_repo("org/tiny", tiny_model)
    key, size = "org/tiny/model.safetensors", (tiny_model / "model.safetensors").stat().st_size
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    argv = [sys.executable, "-c", CHILD, "org/tiny", str(tmp_path)]
    hub.rate = 400_000
    child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while hub.file_bytes.get(key, 0) < 100_000:
            assert child.poll() is None and time.monotonic() < deadline, child.stderr.read()
            time.sleep(0.02)
        hub.pause()
        time.sleep(0.25)  # a chunk under way when pausing lands (chunks are 0.1 s apart)
        held = hub.file_bytes[key]
        time.sleep(0.2)
        assert hub.file_bytes[key] == held < size  # paused mid-file
    finally:
        child.kill()
        child.wait()
    weights_sha256 = hashlib.sha256((tiny_model / "model.safetensors").read_bytes()).hexdigest()
    (orphan,) = (tmp_path / "models--org--tiny" / "blobs").glob("*.incomplete")
    assert orphan.name.startswith(f"{weights_sha256}.")  # then a name unique to the process
    hub.resume()
    hub.rate = None
    before = len(hub.requests)

    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode == 0, done.stderr
    assert files_of(done.stdout.strip()) == files_of(tiny_model)
    retry = [(m, r) for m, p, r in hub.requests[before:] if p.endswith(f"{sha}/model.safetensors")]
    assert retry == [("HEAD", None), ("GET", None)]
    assert hub.file_bytes[key] >= held + size


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> Iterator[S3StandIn]:
    if moto_server_path() is None:
        pytest.skip(MISSING)
    with S3StandIn(tmp_path_factory.mktemp("moto") / "moto.log") as s3:
        yield s3


def test_s3_upload_list_and_ranged_get_through_the_proxy(s3, tiny_model):
    keys = s3.upload_dir("models", "tiny/", tiny_model)
    expected = files_of(tiny_model)
    assert keys == sorted(f"tiny/{name}" for name in expected)
    client = s3.client()
    listed = {o.object_name: o.size for o in client.list_objects("models", "tiny/", recursive=True)}
    assert listed == {f"tiny/{name}": len(data) for name, data in expected.items()}

    before = s3.bytes_down
    response = client.get_object("models", "tiny/model.safetensors", offset=1000, length=5000)
    try:
        assert response.status == 206
        assert response.read() == expected["model.safetensors"][1000:6000]
    finally:
        response.close()
        response.release_conn()
    assert 5000 <= s3.bytes_down - before < 5000 + 4096  # the range and its headers, no more


def test_s3_throttle_slows_a_get_and_counts_it(s3, tiny_model):
    s3.upload_dir("models", "slow/", tiny_model)
    size, rate, before = 1_000_000, 2_000_000, s3.bytes_down
    s3.rate = rate  # half a second for the body
    try:
        started = time.monotonic()
        response = s3.client().get_object("models", "slow/model.safetensors", length=size)
        data = response.read()
        elapsed = time.monotonic() - started
        response.close()
        response.release_conn()
    finally:
        s3.rate = None
    assert data == (tiny_model / "model.safetensors").read_bytes()[:size]
    assert elapsed >= 0.7 * size / rate  # no upper bound: machines are noisy
    assert s3.bytes_down - before >= size


def test_s3_env_names_the_store_and_its_keys(s3, tiny_model):
    s3.upload_dir("models", "env/", tiny_model)
    env = s3.env()
    assert env["AWS_REGION"] == "us-east-1"
    client = Minio(urlsplit(env["AWS_ENDPOINT_URL_S3"]).netloc, access_key=env["AWS_ACCESS_KEY_ID"],
                   secret_key=env["AWS_SECRET_ACCESS_KEY"], secure=False, region=env["AWS_REGION"])  # fmt: skip
    stat = client.stat_object("models", "env/config.json")
    assert stat.size == (tiny_model / "config.json").stat().st_size
