"""A stand-in for the Hugging Face Hub's HTTP API on 127.0.0.1, enough for `huggingface_hub`'s
downloads (`snapshot_download`, `hf_hub_download`, `dry_run`; `endpoint=hub.url` or
`HF_ENDPOINT=hub.url` in a child's environment) on a machine with no internet.

Model repos come from local directories, read into memory when added (test-sized models); each
revision's commit sha is derived from its files, so the same files always get the same sha.
Served, as the Hub does:
- GET /api/models/{repo}[/revision/{rev}]: the repo's info (`sha`, `siblings`; sizes and LFS
  data with `?blobs=true`);
- GET /api/models/{repo}/tree/{rev}[/{path}]: the listing, `?recursive=true` or one level, in
  pages of `page_size` entries linked by a `Link: <...>; rel="next"` header;
- HEAD and GET /{repo}/resolve/{rev}/{file}: the file with the headers `get_hf_file_metadata`
  reads (X-Repo-Commit, ETag, and X-Linked-Etag / X-Linked-Size for LFS files, whose ETag is the
  sha256), one byte range (206 with Content-Range, 416 past the end); bodies paced by `rate`,
  held by `pause()`, counted in `body_bytes` and `file_bytes`;
- 404s with the X-Error-Code huggingface_hub maps to its errors: RepoNotFound,
  RevisionNotFound, EntryNotFound (with X-Repo-Commit, as the Hub sends).

Not served: Xet (no X-Xet-* headers, no `xetHash` in trees, so huggingface_hub downloads over
plain HTTP even with hf_xet installed), the LFS redirect to a CDN (bodies come straight from
/resolve), a tree's `expand` data (last commits, scans), authentication, gated and private repos,
datasets and spaces, uploads, compression.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from .throttle import Pacer

# Weights go through Git LFS on the Hub (its default .gitattributes); the rest are plain git blobs.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".h5", ".msgpack")


@dataclass(frozen=True)
class _File:
    data: bytes
    oid: str  # the git blob id, of the LFS pointer for an LFS file
    sha256: str | None = None  # LFS files only
    pointer_size: int = 0

    @classmethod
    def of(cls, path: str, data: bytes) -> _File:
        if not path.endswith(LFS_SUFFIXES):
            return cls(data, _git_blob_id(data))
        sha256 = hashlib.sha256(data).hexdigest()
        pointer = (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n"
        )
        return cls(data, _git_blob_id(pointer.encode()), sha256, len(pointer))

    @property
    def etag(self) -> str:
        return self.sha256 or self.oid

    def tree_entry(self, path: str) -> dict[str, Any]:
        entry = {"type": "file", "oid": self.oid, "size": len(self.data), "path": path}
        if self.sha256:
            entry["lfs"] = {
                "oid": self.sha256,
                "size": len(self.data),
                "pointerSize": self.pointer_size,
            }
        return entry

    def sibling(self, path: str, with_blobs: bool) -> dict[str, Any]:
        """The file in the repo's info: its name, and its size and LFS data with `?blobs=true`."""
        if not with_blobs:
            return {"rfilename": path}
        lfs = {"size": len(self.data), "sha256": self.sha256, "pointerSize": self.pointer_size}
        return {"rfilename": path, "size": len(self.data), "blobId": self.oid,
                **({"lfs": lfs} if self.sha256 else {})}  # fmt: skip


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class _Repo:
    refs: dict[str, str]  # branch or tag -> commit sha
    commits: dict[str, dict[str, _File]]  # commit sha -> path -> file

    def resolve(self, revision: str) -> str | None:
        sha = self.refs.get(revision, revision)
        return sha if sha in self.commits else None


class _HubError(Exception):
    """A 404 in the Hub's shape: X-Error-Code says what was not found."""

    def __init__(self, code: str, message: str, commit: str | None = None) -> None:
        super().__init__(message)
        self.code, self.commit = code, commit


class HubStandIn:
    """The stand-in Hub (see the module's doc): `with HubStandIn() as hub:`, or start()/stop()."""

    def __init__(self, rate: float | None = None, page_size: int = 1000) -> None:
        self.page_size = page_size  # tree entries a page (the Hub's is 1000)
        self._pacer = Pacer(rate)
        self._lock = threading.Lock()
        self._repos: dict[str, _Repo] = {}
        self._requests: list[tuple[str, str, str | None]] = []
        self._file_bytes: dict[str, int] = {}
        self._drop_after: int | None = None
        self._stopped = False
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.hub = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    def add_repo(self, repo_id: str, directory: str | Path, revision: str = "main") -> str:
        """Serve the files under `directory` (read now) as `revision` of `repo_id`, a branch or tag
        (moved if it exists); returns the commit's sha, which also works as a revision."""
        root, files = Path(directory), {}
        for path in sorted(root.rglob("*")):
            if path.is_file():
                name = path.relative_to(root).as_posix()
                files[name] = _File.of(name, path.read_bytes())
        manifest = "".join(f"{path}\0{f.oid}\n" for path, f in sorted(files.items()))
        sha = hashlib.sha1(manifest.encode()).hexdigest()
        with self._lock:
            repo = self._repos.setdefault(repo_id, _Repo({}, {}))
            repo.commits[sha] = files
            repo.refs[revision] = sha
        return sha

    @property
    def rate(self) -> float | None:
        """File-body bytes per second, shared by all downloads (None: unlimited)."""
        return self._pacer.rate

    @rate.setter
    def rate(self, value: float | None) -> None:
        self._pacer.rate = value

    def pause(self) -> None:
        """Hold every file body before its next chunk (a transfer stays open, mid-way)."""
        self._pacer.pause()

    def resume(self) -> None:
        self._pacer.resume()

    def drop_next_body(self, after: int) -> None:
        """End the next file body after `after` bytes by closing its connection, as a network drop
        does: the client sees the response cut short."""
        with self._lock:
            self._drop_after = after

    @property
    def body_bytes(self) -> int:
        """File-body bytes sent, all files together (counted as each chunk goes out)."""
        with self._lock:
            return sum(self._file_bytes.values())

    @property
    def file_bytes(self) -> dict[str, int]:
        """File-body bytes sent, by "{repo_id}/{path in repo}"."""
        with self._lock:
            return dict(self._file_bytes)

    @property
    def requests(self) -> list[tuple[str, str, str | None]]:
        """Every request so far: (method, path with query, Range header or None)."""
        with self._lock:
            return list(self._requests)

    def start(self) -> HubStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; a paused or throttled body ends at its next chunk."""
        self._stopped = True
        self._pacer.resume()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> HubStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _lookup(self, repo_id: str, revision: str) -> tuple[str, dict[str, _File]]:
        with self._lock:
            repo = self._repos.get(repo_id)
            if repo is None:
                raise _HubError("RepoNotFound", f"Repository {repo_id} not found")
            sha = repo.resolve(revision)
            if sha is None:
                raise _HubError("RevisionNotFound", f"Invalid rev id: {revision}")
            return sha, repo.commits[sha]

    def _record(self, method: str, path: str, range_header: str | None) -> None:
        with self._lock:
            self._requests.append((method, path, range_header))

    def _take_drop(self) -> int | None:
        with self._lock:
            after, self._drop_after = self._drop_after, None
            return after

    def _count(self, key: str, nbytes: int) -> None:
        with self._lock:
            self._file_bytes[key] = self._file_bytes.get(key, 0) + nbytes


_INFO = re.compile(r"/api/models/(?P<repo>[^/]+(?:/[^/]+)?)(?:/revision/(?P<rev>[^/]+))?")
_TREE = re.compile(r"/api/models/(?P<repo>[^/]+(?:/[^/]+)?)/tree/(?P<rev>[^/]+)(?:/(?P<dir>.+))?")
_RESOLVE = re.compile(r"/(?P<repo>[^/]+(?:/[^/]+)?)/resolve/(?P<rev>[^/]+)/(?P<file>.+)")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class _Server(ThreadingHTTPServer):
    hub: HubStandIn
    # snapshot_download opens 8 connections at once: the default backlog of 5 would drop some
    # SYNs, and their retries cost a second each.
    request_queue_size = 64


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as huggingface_hub's client expects
    server: _Server

    @property
    def hub(self) -> HubStandIn:
        return self.server.hub

    def log_message(self, format: str, *args: Any) -> None:
        pass  # `requests` is the log

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        self.hub._record(self.command, self.path, self.headers.get("Range"))
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        try:
            # Matched before unquoting: a revision like refs/pr/1 comes as one quoted segment.
            if m := _RESOLVE.fullmatch(url.path):
                self._file(m["repo"], unquote(m["rev"]), unquote(m["file"]), body)
            elif m := _TREE.fullmatch(url.path):
                self._tree(m["repo"], unquote(m["rev"]), unquote(m["dir"] or ""), query)
            elif m := _INFO.fullmatch(url.path):
                self._info(m["repo"], unquote(m["rev"] or "main"), query)
            else:
                raise _HubError("RepoNotFound", f"Not found: {url.path}")
        except _HubError as e:
            headers = {"X-Error-Code": e.code, "X-Error-Message": str(e)}
            if e.commit:
                headers["X-Repo-Commit"] = e.commit
            self._json(404, {"error": str(e)}, headers, body)

    def _info(self, repo_id: str, revision: str, query: dict[str, list[str]]) -> None:
        sha, files = self.hub._lookup(repo_id, revision)
        siblings = [f.sibling(p, _flag(query, "blobs")) for p, f in files.items()]
        info = {"_id": sha[:24], "id": repo_id, "modelId": repo_id, "sha": sha, "private": False,
                "gated": False, "disabled": False, "tags": [], "siblings": siblings}  # fmt: skip
        self._json(200, info)

    def _tree(self, repo_id: str, revision: str, folder: str, query: dict[str, list[str]]) -> None:
        sha, files = self.hub._lookup(repo_id, revision)
        prefix = f"{folder.strip('/')}/" if folder else ""
        entries: dict[str, dict[str, Any]] = {}
        for path, f in files.items():
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):  # the folders on the way, listed once each
                sub = prefix + "/".join(parts[:depth])
                oid = hashlib.sha1(f"{sha}:{sub}".encode()).hexdigest()
                entries.setdefault(sub, {"type": "directory", "oid": oid, "size": 0, "path": sub})
            entries[path] = f.tree_entry(path)
        if prefix and not entries:
            raise _HubError("EntryNotFound", f"{folder} does not exist on {revision}", sha)
        recursive = _flag(query, "recursive")
        listing = [
            e for p, e in sorted(entries.items()) if recursive or "/" not in p[len(prefix) :]
        ]
        start = int(query.get("cursor", ["0"])[0])
        end = start + self.hub.page_size
        headers = {}
        if end < len(listing):
            params = {k: v[0] for k, v in query.items()} | {"cursor": str(end)}
            headers["Link"] = (
                f'<{self.hub.url}{urlsplit(self.path).path}?{urlencode(params)}>; rel="next"'
            )
        self._json(200, listing[start:end], headers)

    def _file(self, repo_id: str, revision: str, name: str, body: bool) -> None:
        sha, files = self.hub._lookup(repo_id, revision)
        f = files.get(name)
        if f is None:
            raise _HubError("EntryNotFound", f"{name} does not exist on {revision}", sha)
        size = len(f.data)
        headers = {"X-Repo-Commit": sha, "ETag": f'"{f.etag}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}  # fmt: skip
        if f.sha256:
            headers |= {"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(size)}
        start, end = 0, size  # the part sent: [start, end)
        m = _RANGE.fullmatch(self.headers.get("Range", ""))
        if m and (m[1] or m[2]):  # anything else, as a multi-range, gets the whole file
            if m[1]:
                start, end = int(m[1]), min(size, int(m[2]) + 1 if m[2] else size)
            else:  # bytes=-N: the last N
                start = max(0, size - int(m[2]))
            if start >= size or start >= end:
                self._send(
                    416, {**headers, "Content-Range": f"bytes */{size}", "Content-Length": "0"}
                )
                return
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        self._send(206 if "Content-Range" in headers else 200,
                   {**headers, "Content-Length": str(end - start)})  # fmt: skip
        if body:
            self._body(f"{repo_id}/{name}", memoryview(f.data)[start:end])

    def _body(self, key: str, data: memoryview) -> None:
        """Send `data` in paced chunks; stop early (closing the connection) at a planned drop, on
        stop(), or when the client has gone."""
        hub, sent = self.hub, 0
        drop_after = hub._take_drop()
        limit = len(data) if drop_after is None else min(drop_after, len(data))
        try:
            while sent < limit and not hub._stopped:
                n = min(hub._pacer.chunk_size(), limit - sent)
                hub._pacer.wait(n)
                # Counted before it goes: a client that has a body has it counted already.
                hub._count(key, n)
                self.wfile.write(data[sent : sent + n])
                sent += n
        except OSError:  # the client went away mid-body
            pass
        if sent < len(data):
            self.close_connection = True

    def _json(self, status: int, value: Any, headers: dict[str, str] | None = None,
              body: bool = True) -> None:  # fmt: skip
        data = json.dumps(value).encode()
        self._send(status, {**(headers or {}), "Content-Type": "application/json",
                            "Content-Length": str(len(data))})  # fmt: skip
        if body:
            self.wfile.write(data)

    def _send(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[0].lower() in ("1", "true")
