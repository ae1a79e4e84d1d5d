"""Faults and hostile answers in the hf:// and s3:// downloads, found by an adversarial review:
each test reproduced a defect of the first version (the comment above each says which)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from vllm_server_ext.download import (
    CacheFill,
    DownloadError,
    DownloadProgress,
    _fetch_blob,
    fetch_s3,
    parse_source,
)
from vllm_testkit.hub_standin import HubStandIn, _File
from vllm_testkit.s3_standin import S3StandIn, moto_server_path
from vllm_testkit.servers import run_cli

needs_moto = pytest.mark.skipif(moto_server_path() is None, reason="moto is not installed")


# --- S3 -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3() -> Iterator[S3StandIn]:
    if moto_server_path() is None:
        pytest.skip("moto is not installed")
    with S3StandIn() as s3:
        s3.client().make_bucket("models")
        yield s3


@needs_moto
def test_s3_zero_byte_object_is_downloaded(s3: S3StandIn, tmp_path: Path):
    # An empty object (an empty __init__.py, added_tokens.json, .gitkeep...) never gets a
    # partial file (`have < obj.size` is false, so nothing is opened), and `partial.stat()`
    # then raises FileNotFoundError, which escapes `_s3_failures`: every start of such a model
    # fails, with a traceback. Seen: FileNotFoundError: '.../empty.txt.incomplete'.
    client = s3.client()
    client.put_object("models", "empty/config.json", io.BytesIO(b"{}"), 2)
    client.put_object("models", "empty/empty.txt", io.BytesIO(b""), 0)
    dest = tmp_path / "empty"
    fetch_s3(parse_source("s3://models/empty"), dest, DownloadProgress("s3://models/empty"),
             client=client)  # fmt: skip
    assert (dest / "empty.txt").read_bytes() == b""


class _DropAfter:
    """A MinIO client whose object bodies end after `limit` bytes with a dropped connection."""

    def __init__(self, client, limit: int) -> None:
        self._client, self._limit = client, limit

    def __getattr__(self, name):
        return getattr(self._client, name)

    def get_object(self, *args, **kwargs):
        from urllib3.exceptions import ProtocolError

        response, limit = self._client.get_object(*args, **kwargs), self._limit
        stream = response.stream

        def cut(amt):
            sent = 0
            for chunk in stream(amt):
                yield chunk[: limit - sent]
                sent += len(chunk)
                if sent >= limit:
                    raise ProtocolError("Connection broken: IncompleteRead")

        response.stream = cut
        return response


@needs_moto
def test_s3_object_replaced_between_runs_is_not_spliced_onto_the_old_partial(
    s3: S3StandIn, tmp_path: Path
):
    # Run 1 downloads part of weights.bin and is cut off (a dropped connection here; a kill or
    # a SIGTERM leaves the same partial file). The object is then replaced (a new upload of the
    # model under the same prefix). Run 2 lists the NEW ETag and resumes the OLD partial with
    # `offset=have, If-Match: <new etag>`: the precondition holds (it checks the new object
    # against itself), so the new object's tail is appended to the old object's head and the
    # spliced file is recorded as complete. README: "a ranged read that must match the object's
    # ETag, so a changed object starts over" is not what happens. Seen: the file's first 65536
    # bytes are the old object's.
    client = s3.client()
    old, new = os.urandom(300_000), os.urandom(300_000)
    client.put_object("models", "changed/weights.bin", io.BytesIO(old), len(old))
    source, dest = parse_source("s3://models/changed"), tmp_path / "changed"
    with pytest.raises(DownloadError):
        fetch_s3(source, dest, DownloadProgress(source.uri), client=_DropAfter(client, 65536))
    (partial,) = dest.glob("weights.bin.*.incomplete")
    assert partial.stat().st_size == 65536
    client.put_object("models", "changed/weights.bin", io.BytesIO(new), len(new))
    fetch_s3(source, dest, DownloadProgress(source.uri), client=client)
    assert (dest / "weights.bin").read_bytes() == new, "old head spliced onto the new object"


# --- The Hub ------------------------------------------------------------------------------

FETCH_HUB = r"""
import json, os, sys
from vllm_server_ext import download
from vllm_server_ext.download import DownloadProgress, fetch_hub, parse_source
if "REVIEW_RETRIES" in os.environ:  # fewer retries, no back-off: a quick give-up
    download.RETRIES, download.time.sleep = int(os.environ["REVIEW_RETRIES"]), lambda s: None
source = parse_source(sys.argv[1])
try:
    fetch_hub(source, None, sys.argv[2], DownloadProgress(source.uri))
    print(json.dumps({"ok": True}))
except BaseException as e:
    print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
"""


def fetch_hub_in_child(hub: HubStandIn, uri: str, cache: Path, **env_extra: str) -> dict:
    """`fetch_hub` in a child whose HF_ENDPOINT is the stand-in (huggingface_hub reads it once)."""
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", **env_extra}
    result = subprocess.run([sys.executable, "-c", FETCH_HUB, uri, str(cache)], env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.stdout, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_a_hub_partial_that_is_already_whole_does_not_fail_every_start(tmp_path: Path):
    # A partial blob holding every byte (the server killed after the last write and before
    # `os.replace`, or a chunked body whose end was lost after the last byte) is resumed with
    # `Range: bytes=SIZE-`; the Hub answers 416, which is not retried (< 500) and becomes a
    # DownloadError: the server exits 1, and so does every later start, until someone deletes
    # the partial by hand. Seen: "DownloadError: hf://org/m: Client error '416 Requested Range
    # Not Satisfiable' ...". (The S3 path handles the same case: `have < obj.size`.)
    model = tmp_path / "model"
    model.mkdir()
    data = b'{"hidden_size": 8}\n'
    (model / "config.json").write_bytes(data)
    cache = tmp_path / "cache"
    blobs = cache / "models--org--m" / "blobs"
    blobs.mkdir(parents=True)
    etag = _File.of("config.json", data).etag
    (blobs / f"{etag}.vllm-ext.incomplete").write_bytes(data)
    with HubStandIn() as hub:
        hub.add_repo("org/m", model)
        assert fetch_hub_in_child(hub, "hf://org/m", cache) == {"ok": True}


def test_two_files_of_the_same_content_in_one_repo(tmp_path: Path):
    # Two files with one ETag (the same content: duplicate tokenizer files, identical shards,
    # two empty files) are both planned as missing and fetched by two threads into the SAME
    # partial file; the first renames it to the blob, the second's `os.replace` then fails.
    # huggingface_hub's own download holds a per-blob lock for exactly this. Seen:
    # "FileNotFoundError: ... .vllm-ext.incomplete -> .../blobs/<sha256>", an uncaught error:
    # a traceback and exit 1 (the next start finds the blob and succeeds).
    model = tmp_path / "model"
    model.mkdir()
    data = os.urandom(600_000)
    (model / "a.bin").write_bytes(data)
    (model / "b.bin").write_bytes(data)
    (model / "config.json").write_bytes(b"{}")
    with HubStandIn() as hub:
        hub.add_repo("org/m", model)
        hub.rate = 1_000_000  # both transfers overlap
        assert fetch_hub_in_child(hub, "hf://org/m", tmp_path / "cache") == {"ok": True}


def test_a_connection_lost_for_good_is_a_one_line_failure(tmp_path: Path):
    # After its retries `_fetch_blob` re-raises httpx2's TransportError, which `fetch_hub` does
    # not turn into a DownloadError (it catches HfHubHTTPError and huggingface_hub's own errors
    # only): a Hub lost mid-download ends the server with "server failed" and a traceback, not
    # the one line the README promises. (Retries cut to 0 here; with 5 the same after ~31 s.)
    # Seen: "RemoteProtocolError: peer closed connection without sending complete message body".
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.bin").write_bytes(os.urandom(100_000))
    with HubStandIn() as hub:
        hub.add_repo("org/m", model)
        hub.drop_next_body(after=1000)
        outcome = fetch_hub_in_child(hub, "hf://org/m", tmp_path / "cache", REVIEW_RETRIES="0")
    assert outcome.get("error", "").startswith("DownloadError: hf://org/m: "), outcome


class _Recorder(BaseHTTPRequestHandler):
    """Two roles: the Hub (HEAD: a 302 to the other server, as the Hub's LFS files redirect to
    a CDN) and the CDN (GET: the body, recording the Authorization header it was sent)."""

    protocol_version = "HTTP/1.1"
    data = b"x" * 1000
    seen: ClassVar[list[str | None]] = []
    cdn_url = ""

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.cdn_url)
        self.send_header("X-Repo-Commit", "a" * 40)
        self.send_header("X-Linked-Etag", f'"{hashlib.sha256(self.data).hexdigest()}"')
        self.send_header("X-Linked-Size", str(len(self.data)))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Authorization"))
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.data)))
        self.end_headers()
        self.wfile.write(self.data)


def test_the_hf_token_is_not_sent_to_the_host_a_file_redirects_to(
    tmp_path: Path, monkeypatch, hub_online
):
    # The Hub redirects LFS/Xet files to another host (a CDN with a signed URL); `_fetch_blob`
    # GETs `meta.location` with `build_hf_headers()`, i.e. `Authorization: Bearer $HF_TOKEN`.
    # huggingface_hub drops the header for any host that is not the Hub's (`_is_same_or_hub_host`
    # in file_download.py: "Remove authorization header when downloading a LFS blob from a
    # CDN"); this code hands the token to whatever host the redirect names. Seen: the CDN stand-in
    # received "Bearer hf_secret_for_review".
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url

    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Recorder) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    hub_url, cdn_url = (f"http://127.0.0.1:{s.server_address[1]}" for s in servers)
    _Recorder.cdn_url, _Recorder.seen = f"{cdn_url}/signed/blob?sig=1", []
    monkeypatch.setenv("HF_TOKEN", "hf_secret_for_review")
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        hub_url + "/{repo_id}/resolve/{revision}/{filename}",
    )
    try:
        url = hf_hub_url("org/m", "model.safetensors", revision="a" * 40)
        meta = get_hf_file_metadata(url)
        assert meta.location.startswith(cdn_url)
        _fetch_blob("model.safetensors", meta, tmp_path / "blobs", DownloadProgress("hf://org/m"),
                    threading.Event())  # fmt: skip
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    blob = tmp_path / "blobs" / hashlib.sha256(_Recorder.data).hexdigest()
    assert blob.read_bytes() == _Recorder.data
    assert _Recorder.seen == [None], f"the CDN got Authorization: {_Recorder.seen}"


# --- Progress -----------------------------------------------------------------------------


def test_progress_of_a_taken_over_hub_download_counts_the_partial_once():
    # The sequence `fetch` + `fetch_hub` + `_fetch_blob` run when the filler dies mid-file and a
    # waiter takes over: the waiter mirrored the filler's 900 of 1000 bytes (all of them in the
    # one partial blob); it takes the lock, `start(1000, 0)` (no whole blob yet) keeps 900 (never
    # goes back), and `_fetch_blob` adds the partial's 900 again: "bytes" says 1000 of 1000 (and
    # the rate 0, no ETA) while 100 bytes are still to come.
    # (Now: `start` takes this server's own count, partial files included, over the mirrored.)
    progress = DownloadProgress("hf://org/m")
    progress.mirror({"bytes": 900, "total_bytes": 1000, "revision": "c" * 40}, "pod-a")
    progress.start(1000, 900, "c" * 40)  # fetch_hub: the partial blob's 900 bytes
    assert progress.bytes == 900 and "filled_by" not in progress.describe()
    progress.add(100)
    assert progress.bytes == 1000


def test_bytes_never_exceed_total_after_waiting_on_another_revision():
    # The lock is per source (hf://ORG/NAME), not per revision: a server of --revision v2 waits
    # on one filling v1 and mirrors v1's progress; when it then plans v2 (smaller), `start`
    # keeps the mirrored bytes: /ready says "bytes": 900, "total_bytes": 500.
    progress = DownloadProgress("hf://org/m")
    progress.mirror({"bytes": 900, "total_bytes": 1000, "revision": "1" * 40}, "pod-a")
    progress.start(500, 100, "2" * 40)
    body = progress.describe()
    assert body["bytes"] <= body["total_bytes"], body


def test_a_malformed_progress_file_does_not_kill_the_waiter(tmp_path: Path):
    # The waiter reads the filler's progress file every 0.5 s and catches OSError and ValueError
    # only: a file that another writer of the shared volume left deeply nested (or any JSON
    # json.loads cannot build) raises RecursionError, which escapes `fetch` and fails the
    # server with a traceback instead of being ignored as "not written yet".
    fill = CacheFill(tmp_path, parse_source("hf://org/m"))
    fill.dir.mkdir(parents=True)
    fill.progress_path.write_text("[" * 200_000)
    assert fill.read_progress() == ({}, None)


# --- The command line ---------------------------------------------------------------------


def test_a_config_file_is_refused_with_a_downloaded_model(tmp_path: Path):
    # vLLM takes any flag from `--config FILE` (YAML), the CLI's winning over the file's, but the
    # download happens before vLLM reads it: the file's `revision: v2` was not downloaded (main
    # was, and vLLM, handed the local path, ignored the revision: main was served silently), and
    # the file's `served-model-name` was overridden by the `--served-model-name ORG/NAME` that
    # `download_model` appends. Now refused, in one line.
    config = tmp_path / "config.yaml"
    config.write_text("revision: v2\nserved-model-name: my-model\n")
    result = run_cli("hf://org/name", "--config", str(config), "--port", "0")
    assert result.returncode == 2
    assert result.stderr == (
        "vllm-ext-serve: error: argument --config: not supported with a hf:// model (give "
        "--revision, --served-model-name and --download-dir on the command line)\n"
    )


def test_a_revision_of_an_s3_model_is_refused():
    result = run_cli("s3://bucket/model", "--revision", "v2", "--port", "0")
    assert result.returncode == 2
    assert result.stderr == (
        "vllm-ext-serve: error: argument --revision: not supported with an s3:// model "
        "(a prefix has none)\n"
    )
