"""A stand-in for S3 on 127.0.0.1: moto's S3 server (`moto_server`, a process of its own) behind a
`ThrottledProxy`, so tests can slow, pause and count what a client downloads.

moto lives in .venv-moto (`make moto`): its botocore needs a python-dateutil older than the
kubernetes client's in .venv. MOTO_SERVER=/path/to/moto_server runs another.
`moto_server_path()` is None without it: tests skip, saying so.

moto keeps objects in memory and checks no signature: any keys are let in, none is refused. It
serves every AWS service on its port, telling S3 requests by their signature's scope.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

from minio import Minio

from .servers import free_port
from .throttle import ThrottledProxy

ROOT = Path(__file__).parents[2]
MOTO_SERVER = Path(os.environ.get("MOTO_SERVER") or ROOT / ".venv-moto" / "bin" / "moto_server")
MISSING = f"moto is not installed at {MOTO_SERVER}: `make moto` installs it into .venv-moto"


def moto_server_path() -> Path | None:
    """The `moto_server` to run, or None when it is not installed (`MISSING` says where)."""
    return MOTO_SERVER if MOTO_SERVER.exists() else None


class S3StandIn:
    """moto's S3 behind a throttling proxy: `with S3StandIn() as s3:`, or start()/stop()."""

    access_key = "stand-in-access-key"
    secret_key = "stand-in-secret-key"
    region = "us-east-1"

    def __init__(self, log_path: Path | None = None) -> None:
        self.log_path = log_path  # moto's output; discarded without one
        self._proc: subprocess.Popen | None = None
        self._proxy: ThrottledProxy | None = None

    def start(self, timeout: float = 30.0) -> S3StandIn:
        binary = moto_server_path()
        if binary is None:
            raise RuntimeError(MISSING)
        port = free_port()
        log = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self._proc = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while not _accepts(port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"moto_server did not start on port {port} (log: {self.log_path})"
                )
            time.sleep(0.05)
        self._proxy = ThrottledProxy(port).start()
        return self

    def stop(self) -> None:
        if self._proxy is not None:
            self._proxy.stop()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> S3StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def proxy(self) -> ThrottledProxy:
        assert self._proxy is not None, "not started"
        return self._proxy

    @property
    def endpoint_url(self) -> str:
        """Where clients connect: the proxy, never moto directly."""
        return f"http://127.0.0.1:{self.proxy.port}"

    @property
    def rate(self) -> float | None:
        """Bytes per second from the store to its clients, all together (None: unlimited)."""
        return self.proxy.rate

    @rate.setter
    def rate(self, value: float | None) -> None:
        self.proxy.rate = value

    @property
    def bytes_down(self) -> int:
        """Bytes sent to clients so far, HTTP headers included."""
        return self.proxy.bytes_down

    def env(self) -> dict[str, str]:
        """The environment for a child process that talks to this store."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
        }

    def client(self) -> Minio:
        return Minio(f"127.0.0.1:{self.proxy.port}", access_key=self.access_key,
                     secret_key=self.secret_key, secure=False, region=self.region)  # fmt: skip

    def upload_dir(self, bucket: str, prefix: str, directory: str | Path) -> list[str]:
        """Put every file under `directory` at `prefix` + its relative path in `bucket` (made if
        missing); returns the keys."""
        client, root = self.client(), Path(directory)
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
        keys = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            key = prefix + path.relative_to(root).as_posix()
            client.fput_object(bucket, key, str(path))
            keys.append(key)
        return keys

    def put_any_key(self, bucket: str, key: str, data: bytes) -> None:
        """Put an object under any key, even one client libraries refuse to write (a `..`
        segment), as a hostile or careless store may list: a plain PUT, which moto stores as
        sent (it checks no signature)."""
        quoted = urllib.parse.quote(key, safe="/").replace(".", "%2E")
        url = f"{self.endpoint_url}/{bucket}/{quoted}"
        scope = f"stand-in/20260101/{self.region}/s3/aws4_request"  # tells moto it is S3
        auth = f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host, Signature=0"
        request = urllib.request.Request(url, data, {"Authorization": auth}, method="PUT")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200, response.status


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True
