"""Model sources the server fetches itself, before vLLM is imported, with progress.

`vllm-ext-serve hf://ORG/NAME` (the Hugging Face Hub) and `s3://BUCKET/PREFIX` (S3 or any
S3-compatible store) are downloaded into the local cache in a `downloading` phase whose bytes
done, total, rate and time left `/ready` and `/metrics` report; vLLM then loads the local copy.
Downloads resume: partial files are kept and continued with ranged requests by the next start.
Servers that share the cache (a PVC mounted by every replica) fill it once: the first takes the
source's lock and downloads, the others wait in `waiting_for_cache`, reporting the filler's
progress, then find the files in place. A plain path or `ORG/NAME` is vLLM's business, as with
`vllm serve`.

Where: the Hub's cache (`HF_HUB_CACHE`, or vLLM's `--download-dir`) for hf://, and `s3/BUCKET/
PREFIX` under `HF_HOME` (or `--download-dir`) for s3://. S3 credentials, region and endpoint come
from AWS's own variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
`AWS_REGION`, `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`); without credentials, anonymous.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import hashlib
import json
import os
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .logs import log

# The Hub's repo ids (huggingface_hub's rules, checked here before it is imported).
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}\Z")
# S3 bucket names: 3 to 63 lowercase letters, digits, dots and hyphens.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
_COMMIT = re.compile(r"[0-9a-f]{40}\Z")
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}\Z")  # a host name: a pod's name
_MAX_PROGRESS_FILE = 64 * 1024
# Rate over the last this many seconds.
RATE_WINDOW = 10.0
# How often the filler of a shared cache writes its progress for the servers waiting on it.
PROGRESS_INTERVAL = 1.0
PARALLEL_FILES = 8
_CHUNK = 1 << 16  # S3 reads: what a killed download loses at most, per file


class SourceError(ValueError):
    """A model URI this server cannot fetch (its message names what is wrong)."""


class DownloadError(RuntimeError):
    """A download failed for a reason retrying will not fix (its message says which)."""


@dataclass(frozen=True)
class Source:
    """A model to download: `hf://ORG/NAME` or `s3://BUCKET[/PREFIX]`."""

    uri: str
    scheme: str
    location: str  # ORG/NAME, or BUCKET/PREFIX

    @property
    def bucket(self) -> str:
        return self.location.split("/", 1)[0]

    @property
    def prefix(self) -> str:
        return self.location.partition("/")[2]


def parse_source(model: str) -> Source | None:
    """The source `model` names, None for anything vLLM loads itself (a path, `ORG/NAME`);
    `SourceError` for a malformed hf:// or s3:// URI."""
    scheme, sep, rest = model.partition("://")
    if not sep or scheme not in ("hf", "s3"):
        return None
    if scheme == "hf":
        if not _REPO_ID.match(rest) or ".." in rest:
            raise SourceError(f"invalid model {model!r}: expected hf://ORG/NAME")
        return Source(model, scheme, rest)
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if not _BUCKET.match(bucket) or any(p in ("", ".", "..") for p in prefix.split("/") if prefix):
        raise SourceError(f"invalid model {model!r}: expected s3://BUCKET/PREFIX")
    return Source(f"s3://{bucket}/{prefix}".rstrip("/"), scheme, f"{bucket}/{prefix}".rstrip("/"))


class DownloadProgress:
    """How far the model's download is: bytes in place (what the cache held included; never
    goes back), the total once known, bytes fetched by this process, the recent rate. Written
    by the download's threads, read by the early server's."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.revision: str | None = None
        self.total: int | None = None
        self.fetched = 0
        self.complete = False
        self.filled_by: str | None = None  # another server filling the shared cache
        self._present = 0
        self._samples: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def start(self, total: int, present: int, revision: str | None = None) -> None:
        """This server's own plan: what it mirrored of another's fill until now is replaced."""
        with self._lock:
            self.total, self.revision, self.filled_by = total, revision, None
            self._present = min(present, total)
            self._samples.clear()
            self._set(self._present)

    def add(self, n: int) -> None:
        """`n` more bytes in place."""
        with self._lock:
            self._set(self._present + n)

    def received(self, n: int) -> None:
        """`n` more bytes fetched over the network by this process."""
        with self._lock:
            self.fetched += n

    def finish(self) -> None:
        with self._lock:
            if self.total is not None:
                self._set(self.total)
            self.complete, self.filled_by = True, None

    def mirror(self, other: dict[str, Any], filled_by: str | None) -> None:
        """Report another server's fill of the shared cache (what `CacheFill.read_progress`
        read and checked)."""
        with self._lock:
            total, present = other.get("total_bytes"), other.get("bytes")
            if isinstance(total, int) and isinstance(present, int):
                self.total, self.revision = total, other.get("revision")
                self._set(present)
            self.filled_by = filled_by

    @property
    def bytes(self) -> int:
        return self._present

    def _set(self, present: int) -> None:
        now = time.monotonic()
        self._present = max(self._present, present)
        if self.total is not None:
            self._present = min(self._present, self.total)
        self._samples.append((now, self._present))
        while len(self._samples) > 2 and now - self._samples[1][0] > RATE_WINDOW:
            self._samples.popleft()

    def rate(self) -> float:
        """Bytes per second over the last `RATE_WINDOW` seconds (0 without two samples)."""
        with self._lock:
            if self.complete or len(self._samples) < 2:
                return 0.0
            (t0, b0), now = self._samples[0], time.monotonic()
            return (self._present - b0) / (now - t0) if now > t0 else 0.0

    def describe(self) -> dict[str, Any]:
        """The `download` object of `/ready`'s body."""
        rate = self.rate()
        with self._lock:
            left = None if self.total is None else max(self.total - self._present, 0)
            body: dict[str, Any] = {
                "source": self.source,
                "revision": self.revision,
                "bytes": self._present,
                "total_bytes": self.total,
                "fetched_bytes": self.fetched,
                "bytes_per_second": round(rate, 1),
                "eta_seconds": round(left / rate, 1) if left is not None and rate > 0 else None,
                "complete": self.complete,
            }
            if self.filled_by:
                body["filled_by"] = self.filled_by
            return body


@dataclass(frozen=True)
class Fetched:
    """A downloaded model: where it is and what it is."""

    path: Path
    revision: str | None
    size: int


# --- The shared cache: one filler per source ---------------------------------------------


class CacheFill:
    """The right to fill the cache with one source, held by one server at a time across every
    process that shares the cache (a POSIX lock: local filesystems and NFS alike, released by
    the kernel when its holder dies, so a killed filler's successor resumes its download). The
    holder publishes its progress beside the lock for the servers waiting."""

    def __init__(self, root: Path, source: Source) -> None:
        digest = hashlib.sha256(source.uri.encode()).hexdigest()[:24]
        self.dir = root / ".vllm-ext"
        self.lock_path = self.dir / f"{digest}.lock"
        self.progress_path = self.dir / f"{digest}.progress.json"
        self._fd: int | None = None
        self.read_only = False
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None

    def try_acquire(self) -> bool:
        """Whether this server holds the fill now; always, on a cache it cannot write to (a
        filled read-only volume: nothing to fill, nobody to wait for)."""
        if self.read_only:
            return True
        if self._fd is None:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                    raise
                log.info("the cache is read-only: no fill lock", extra={"dir": str(self.dir)})
                self.read_only = True
                return True
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    def read_progress(self) -> tuple[dict[str, Any], str | None]:
        """The holder's last published progress and who it is ({} and None before it wrote, or
        for anything else: another writer of the shared volume is not trusted)."""
        try:
            with self.progress_path.open("rb") as f:
                data = json.loads(f.read(_MAX_PROGRESS_FILE))
        except Exception:  # unreadable, not JSON, nested too deep: not written (yet)
            return {}, None
        if not isinstance(data, dict):
            return {}, None
        sizes = [data.get("bytes"), data.get("total_bytes")]
        if not all(type(n) is int and 0 <= n < 2**63 for n in sizes):
            return {}, None
        revision, by = data.get("revision"), data.get("filled_by")
        checked = {
            "bytes": sizes[0],
            "total_bytes": sizes[1],
            "revision": revision if isinstance(revision, str) and _COMMIT.match(revision) else None,
        }
        return checked, by if isinstance(by, str) and _HOST.match(by) else None

    def publish(self, progress: DownloadProgress) -> None:
        """Write `progress` for the waiters every `PROGRESS_INTERVAL` until `release`."""
        if self.read_only:
            return
        holder = socket.gethostname()  # the pod's name on Kubernetes

        def write() -> None:
            while True:
                body = {**progress.describe(), "filled_by": holder}
                tmp = self.progress_path.with_suffix(f".{os.getpid()}.tmp")
                with contextlib.suppress(OSError):  # progress for others: never fatal
                    tmp.write_text(json.dumps(body))
                    os.replace(tmp, self.progress_path)
                if self._stop.wait(PROGRESS_INTERVAL):
                    return

        self._writer = threading.Thread(target=write, name="cache-progress", daemon=True)
        self._writer.start()

    def release(self) -> None:
        self._stop.set()
        if self._writer is not None:
            self._writer.join()
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None


# --- The Hub ------------------------------------------------------------------------------

# Partial blobs keep this name (the per-source lock keeps other servers of this cache off them),
# so a restarted server resumes them: huggingface_hub's own downloads start over in a new file
# of each process's.
_HUB_PARTIAL = ".vllm-ext.incomplete"
_BLOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")  # an LFS file's ETag: its content's digest
RETRIES = 5  # per file, resuming, on a dropped connection or a failing Hub (1, 2, 4, 8, 16 s)


class _Stopped(Exception):
    """Another file's download failed: this one stops (its partial file kept)."""


def fetch_hub(source: Source, revision: str | None, cache_dir: str | None,
              progress: DownloadProgress) -> Fetched:  # fmt: skip
    """The repo's snapshot at `revision` (default: main), pinned to its commit, in the Hub's
    cache layout: huggingface_hub plans it (commit, files, sizes, what the cache holds) and lays
    out the snapshot; the blobs it lacks are fetched here, resumably, with ranged requests."""
    import httpx2
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, snapshot_download
    from huggingface_hub.errors import (
        DryRunError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.file_download import repo_folder_name

    repo = source.location
    blobs = Path(cache_dir or constants.HF_HUB_CACHE) / repo_folder_name(
        repo_id=repo, repo_type="model"
    ) / "blobs"  # fmt: skip
    try:
        try:
            plan = snapshot_download(repo, revision=revision, cache_dir=cache_dir, dry_run=True)
        except DryRunError:  # offline (HF_HUB_OFFLINE): what the cache holds, if anything
            path = Path(snapshot_download(repo, revision=revision, cache_dir=cache_dir))
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            progress.start(size, size, path.name)
            progress.finish()
            return Fetched(path, path.name, size)
        commit = plan[0].commit_hash if plan else revision
        total = sum(f.file_size or 0 for f in plan)
        missing = [f.filename for f in plan if f.will_download]
        # One blob per content: files of the same content (an ETag) are fetched once.
        metas = _all_or_nothing(
            lambda name, stop: get_hf_file_metadata(hf_hub_url(repo, name, revision=commit)),
            missing, "hub-head",
        )  # fmt: skip
        blobs_wanted = {}
        for name, meta in zip(missing, metas, strict=True):
            # The ETag names the blob in the cache: one plain file name, nothing else.
            if not _BLOB_NAME.match(meta.etag or "") or ".." in meta.etag:
                raise DownloadError(f"{name}: unusable ETag {str(meta.etag)[:80]!r}")
            blobs_wanted.setdefault(meta.etag, (name, meta))
        partial = sum(_partial_size(blobs, etag, meta.size) for etag, (_, meta) in
                      blobs_wanted.items())  # fmt: skip
        present = total - sum(f.file_size or 0 for f in plan if f.will_download) + partial
        progress.start(total, present, commit)
        log.info(
            "downloading",
            extra={"source": source.uri, "revision": commit, "files": len(plan), "bytes": total,
                   "missing_files": len(missing), "in_place": present},
        )  # fmt: skip
        _all_or_nothing(
            lambda item, stop: _fetch_blob(item[0], item[1], blobs, progress, stop),
            list(blobs_wanted.values()), "hub",
        )  # fmt: skip
        # Every blob is in place: this lays out the snapshot (links, refs) and fetches nothing.
        path = snapshot_download(repo, revision=commit, cache_dir=cache_dir)
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError) as e:
        raise DownloadError(f"{source.uri}: {_first_line(e)}") from None
    except LocalEntryNotFoundError as e:
        raise DownloadError(f"{source.uri}: not in the cache and the Hub is out of reach "
                            f"({_first_line(e)})") from None  # fmt: skip
    except (HfHubHTTPError, httpx2.TransportError, DownloadError) as e:  # refused, failing, ...
        raise DownloadError(f"{source.uri}: {_first_line(e)}") from None
    progress.finish()
    return Fetched(Path(path), commit, total)


def _partial_size(blobs: Path, etag: str, size: int | None) -> int:
    partial = blobs / (etag + _HUB_PARTIAL)
    have = partial.stat().st_size if partial.is_file() else 0
    return have if size is None or have <= size else 0


def _fetch_blob(filename: str, meta: Any, blobs: Path, progress: DownloadProgress,
                stop: threading.Event) -> None:  # fmt: skip
    """One file of the repo into the cache's blobs (named by its ETag, as huggingface_hub names
    them), resuming its partial file; retried, resuming, when the connection drops or the Hub
    fails; an LFS file's content checked against its SHA-256."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    blob, size = blobs / meta.etag, meta.size
    if blob.exists():  # in place meanwhile (another revision's file of the same content)
        return
    blobs.mkdir(parents=True, exist_ok=True)
    partial = blob.with_name(blob.name + _HUB_PARTIAL)
    have = _partial_size(blobs, meta.etag, size)
    if not have:
        partial.write_bytes(b"")
    counted = have  # what the progress holds of this file
    headers = build_hf_headers()
    if _origin(meta.location) != _origin(constants.ENDPOINT):
        # A CDN's signed URL (the Hub's large files) needs no token and must not get it.
        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
    for attempt in range(RETRIES + 1):
        if have == size:
            break
        ranged = {**headers, "Range": f"bytes={have}-"} if have else headers
        try:
            with get_session().stream("GET", meta.location, headers=ranged,
                                      follow_redirects=True) as response:  # fmt: skip
                if response.status_code == 416:  # the partial file is not a prefix of it
                    have = 0
                    partial.write_bytes(b"")
                    raise _Retry("416 Range Not Satisfiable: fetching the file again")
                hf_raise_for_status(response)
                # A 200 to a ranged request: the whole file again.
                mode = "ab" if have and response.status_code == 206 else "wb"
                with partial.open(mode) as out:
                    for chunk in response.iter_bytes():  # as they come: fine-grained progress
                        if stop.is_set():
                            raise _Stopped
                        out.write(chunk)
                        have = out.tell()
                        progress.received(len(chunk))
                        if have > counted:
                            progress.add(have - counted)
                            counted = have
                        if size is not None and have > size:
                            raise DownloadError(f"{filename}: more than its {size} bytes")
            break
        except (httpx2.TransportError, HfHubHTTPError, _Retry) as e:
            status = getattr(getattr(e, "response", None), "status_code", 500)
            if attempt == RETRIES or (status < 500 and status != 429):
                raise
            where = {"file": filename, "bytes": have, "error": _first_line(e)}
            log.warning("download interrupted; resuming", extra=where)
            time.sleep(2**attempt)
    if size is not None and have != size:
        raise DownloadError(f"{filename}: got {have} bytes of {size}")
    if _SHA256.match(meta.etag):
        digest = hashlib.sha256()
        with partial.open("rb") as f:
            while block := f.read(_CHUNK * 16):
                digest.update(block)
        if digest.hexdigest() != meta.etag:
            partial.unlink()
            raise DownloadError(f"{filename}: its content does not match its SHA-256")
    os.replace(partial, blob)


class _Retry(Exception):
    """A failed attempt worth another."""


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _all_or_nothing(fn: Callable[[Any, threading.Event], Any], items: list[Any],
                    name: str) -> list[Any]:  # fmt: skip
    """`fn(item, stop)` for every item, `PARALLEL_FILES` at a time, results in order; the first
    failure sets `stop` (the others' loops check it), cancels what has not started, and is
    raised: a failure shows at once, not after every other file of a model has downloaded."""
    if not items:
        return []
    stop = threading.Event()
    with ThreadPoolExecutor(min(PARALLEL_FILES, len(items)), thread_name_prefix=name) as pool:
        futures = [pool.submit(fn, item, stop) for item in items]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f.exception() for f in futures if f in done and f.exception()), None)
        if failed is not None:
            stop.set()
            for future in futures:
                future.cancel()
            raise failed
        return [f.result() for f in futures]


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


# --- S3 -----------------------------------------------------------------------------------

_DONE = ".vllm-ext-complete.json"  # object name -> ETag of each file in place
_PARTIAL = ".incomplete"


def s3_client() -> Any:
    """A MinIO client for the endpoint, region and credentials of AWS's variables."""
    from minio import Minio
    from minio.credentials import EnvAWSProvider, IamAwsProvider

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if endpoint:
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise SourceError(f"invalid S3 endpoint {endpoint!r}: expected http(s)://HOST[:PORT]")
        host, secure = url.netloc, url.scheme == "https"
    else:
        host, secure = "s3.amazonaws.com", True
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        credentials: Any = EnvAWSProvider()
    elif os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE"):  # IAM roles for service accounts
        credentials = IamAwsProvider()
    else:
        credentials = None  # anonymous: a public bucket
    return Minio(host, secure=secure, region=region, credentials=credentials)


@contextlib.contextmanager
def _s3_failures(source: Source) -> Iterator[None]:
    """The store's refusals and an unreachable endpoint as `DownloadError`s, in one line."""
    from minio.error import MinioException, S3Error
    from urllib3.exceptions import HTTPError

    try:
        yield
    except S3Error as e:
        raise DownloadError(f"{source.uri}: {e.code}: {e.message}") from None
    except (MinioException, HTTPError, DownloadError) as e:
        raise DownloadError(f"{source.uri}: {_first_line(e)}") from None


def fetch_s3(source: Source, dest: Path, progress: DownloadProgress, client: Any = None) -> Fetched:
    """Every object under the prefix, into `dest` (the prefix's layout), resuming partial files
    (ranged reads of the same ETag: a partial file is named by its object's ETag, and one of
    another ETag is dropped) and skipping those already in place."""
    client = client or s3_client()
    bucket, prefix = source.bucket, source.prefix
    with _s3_failures(source):
        objects = client.list_objects(bucket, prefix=f"{prefix}/" if prefix else None,
                                      recursive=True)  # fmt: skip
        listing = [o for o in objects if not o.is_dir]
    if not listing:
        raise DownloadError(f"{source.uri}: no objects under this prefix")
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    done_path = dest / _DONE
    try:
        done: dict[str, str] = json.loads(done_path.read_text())
    except (OSError, ValueError):
        done = {}
    plan: list[tuple[Any, Path]] = []
    targets: set[Path] = set()
    total = present = 0
    for obj in listing:
        target = (dest / obj.object_name[len(prefix) :].lstrip("/")).resolve()
        if not target.is_relative_to(root) or target == root:  # `..` in a key: never outside
            raise DownloadError(f"{source.uri}: object {obj.object_name!r} leaves the prefix")
        targets.add(target)
        total += obj.size
        if done.get(obj.object_name) == obj.etag and target.is_file():
            present += obj.size
            continue
        partial = _s3_partial(target, obj.etag)
        present += min(partial.stat().st_size, obj.size) if partial.is_file() else 0
        plan.append((obj, target))
    for target in targets:  # `a` and `a/b`: a file cannot be a directory too
        if any(parent in targets for parent in target.parents):
            raise DownloadError(f"{source.uri}: {target.relative_to(root)} is a file and a folder")
    progress.start(total, present)
    log.info(
        "downloading",
        extra={"source": source.uri, "files": len(listing), "bytes": total, "in_place": present},
    )
    done_lock = threading.Lock()

    def fetch(item: tuple[Any, Path], stop: threading.Event) -> None:
        from minio.error import S3Error

        obj, target = item
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = _s3_partial(target, obj.etag)
        for stale in target.parent.glob(f"{glob.escape(target.name)}.*{_PARTIAL}"):
            if stale != partial:  # another ETag's bytes: not this object's
                stale.unlink()
        have = partial.stat().st_size if partial.is_file() else 0
        if have > obj.size:
            have = 0
        if have < obj.size or not partial.is_file():
            # The listing's ETag again: an object replaced since answers 412.
            try:
                response = client.get_object(bucket, obj.object_name, offset=have,
                                             request_headers={"If-Match": obj.etag})  # fmt: skip
            except S3Error as e:
                if e.code == "PreconditionFailed":
                    partial.unlink(missing_ok=True)
                    raise DownloadError(f"{obj.object_name} changed while downloading") from None
                raise
            try:
                with partial.open("ab" if have else "wb") as out:
                    for chunk in response.stream(_CHUNK):
                        if stop.is_set():
                            raise _Stopped
                        out.write(chunk)
                        progress.add(len(chunk))
                        progress.received(len(chunk))
            finally:
                response.close()
                response.release_conn()
        if partial.stat().st_size != obj.size:
            raise DownloadError(f"{obj.object_name} is incomplete; retry")
        os.replace(partial, target)
        with done_lock:
            done[obj.object_name] = obj.etag
            tmp = done_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(done))
            os.replace(tmp, done_path)

    with _s3_failures(source):
        _all_or_nothing(fetch, plan, "s3")
    progress.finish()
    return Fetched(dest, None, total)


def _s3_partial(target: Path, etag: str) -> Path:
    """Where the bytes of `target` at `etag` gather until complete."""
    tag = hashlib.sha256(etag.encode()).hexdigest()[:16]
    return target.with_name(f"{target.name}.{tag}{_PARTIAL}")


# --- Both ---------------------------------------------------------------------------------


def cache_root(source: Source, download_dir: str | None) -> Path:
    """Where `source` goes: the Hub's cache, or `s3/` under HF_HOME; `--download-dir` for both."""
    from huggingface_hub import constants

    if source.scheme == "hf":
        return Path(download_dir or constants.HF_HUB_CACHE)
    return Path(download_dir or constants.HF_HOME) / "s3"


def fetch(
    source: Source,
    *,
    revision: str | None,
    download_dir: str | None,
    progress: DownloadProgress,
    on_wait: Callable[[], None],
    on_fill: Callable[[], None],
) -> Fetched:
    """Download `source` once per cache: `on_wait` when another server is filling it (this one
    then reports that fill until it ends), `on_fill` when this one fetches (or checks) it."""
    root = cache_root(source, download_dir)
    fill = CacheFill(root, source)
    try:
        if not fill.try_acquire():
            on_wait()
            log.info("waiting for another server to fill the cache", extra={"source": source.uri})
            while not fill.try_acquire():
                progress.mirror(*fill.read_progress())
                time.sleep(PROGRESS_INTERVAL / 2)
        on_fill()
        fill.publish(progress)
        if source.scheme == "hf":
            return fetch_hub(source, revision, download_dir, progress)
        return fetch_s3(source, root / source.location, progress)
    except OSError as e:  # the cache's disk: full, not writable, ...
        raise DownloadError(f"{source.uri}: {_first_line(e)}") from None
    finally:
        fill.release()
