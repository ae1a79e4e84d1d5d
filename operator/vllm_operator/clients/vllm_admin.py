"""The vLLM servers' admin port, over HTTP: what adapters a server holds, load, unload.

Each call has its own timeout; the reconciler fans them out with bounded concurrency. A server
answers with its instance id (`vllm-instance-id`, new on every start) on every response.

A pod is not trusted with the operator's memory: every body is read in chunks up to
`MAX_BODY` (a longer one, or one that says so in Content-Length, is not read on), compressed
bodies are refused rather than inflated, and `/v1/models` must have the shape vLLM gives it.
Whatever a pod answers that is not that is "no report" for that pod, never an exception.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from ..model.adapters import CallResult, ServerReport
from ..model.pods import Download, StartupReport
from .admin_token import AdminTokens

INSTANCE_HEADER = "vllm-instance-id"
CALL_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=3)
PROBE_TIMEOUT = aiohttp.ClientTimeout(total=5, connect=2)
# vLLM's /v1/models with the base model and 256 adapters (maxLoras' maximum) is about 100 KiB.
MAX_BODY = 1 << 20
MAX_MESSAGE = 1024  # of a server's error message, as it goes into the LoraAdapter's status
MAX_READY_BODY = 64 << 10  # a /ready body is about 400 bytes
MAX_PHASE = 64
# A download's fields: its source as long as spec.model.uri may be, a revision as the status
# takes it, sizes an int64 (and a float) holds exactly.
MAX_SOURCE = 1024
MAX_REVISION = 256
MAX_BYTES = 2**53
MAX_INSTANCE = 128  # vllm-ext-serve's instance ids are 32 hex digits; they go into the status too
_CHUNK = 64 << 10


async def _read_capped(response: aiohttp.ClientResponse, cap: int = MAX_BODY) -> bytes | None:
    """The body, read in chunks, or None (and the connection closed, the rest unread) as soon
    as it, or its Content-Length, passes `cap`. Compressed bodies are refused: inflating
    them is the same attack (the session asks for identity and does not decompress)."""
    compressed = response.headers.get("Content-Encoding", "identity").lower() != "identity"
    if compressed or (response.content_length or 0) > cap:
        response.close()
        return None
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > cap:
            response.close()
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _adapters(raw: bytes) -> dict[str, str] | None:
    """Adapter name -> path from a `/v1/models` body, or None unless it is vLLM's shape: an
    object whose `data` is a list of objects with a string `id` (and `root`, `parent` strings
    or null)."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deep
        return None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return None
    adapters = {}
    for model in data:
        if not isinstance(model, dict) or not isinstance(model.get("id"), str):
            return None
        root, parent = model.get("root"), model.get("parent")
        if not all(v is None or isinstance(v, str) for v in (root, parent)):
            return None
        if parent:  # adapters name their base model; the base model does not
            adapters[model["id"]] = root or ""
    return adapters


def _startup_report(raw: bytes) -> StartupReport | None:
    """A `/ready` body of vllm-ext-serve: `phase`, `uptime_seconds`, `startup_seconds` (seconds
    per phase so far, the current one included), `error` once it died, `download` for a model it
    downloads; None if not that shape."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    phase, uptime = body.get("phase"), body.get("uptime_seconds")
    phases, error = body.get("startup_seconds") or {}, body.get("error")
    if not isinstance(phase, str) or not 0 < len(phase) <= MAX_PHASE:
        return None
    if not _seconds(uptime) or not isinstance(phases, dict):
        return None
    in_phase = phases.get(phase, 0)
    if not _seconds(in_phase):
        return None
    error = _cut(error) if isinstance(error, str) else None
    download = _download(body.get("download"))
    return StartupReport(phase, float(in_phase), float(uptime), error, download)


def _download(value: Any) -> Download | None:
    """`/ready`'s `download` object, or None if there is none or any field of it is not what
    vllm-ext-serve sends (the rest of the report stands)."""
    if not isinstance(value, dict):
        return None
    source, revision = value.get("source"), value.get("revision")
    size, total, eta = value.get("bytes"), value.get("total_bytes"), value.get("eta_seconds")
    complete = value.get("complete")
    if not (isinstance(source, str) and 0 < len(source) <= MAX_SOURCE):
        return None
    if revision is not None and not (
        isinstance(revision, str)
        and 0 < len(revision) <= MAX_REVISION
        and revision.isascii()
        and revision.isprintable()
        and " " not in revision
    ):
        return None
    if not _size(size) or (total is not None and not _size(total)):
        return None
    if (eta is not None and not _seconds(eta)) or not isinstance(complete, bool):
        return None
    return Download(
        source=source,
        revision=revision,
        bytes=size,
        total_bytes=total,
        eta_seconds=None if eta is None else float(eta),
        complete=complete,
    )


def _size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_BYTES


def _seconds(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and 0 <= value < 10 * 365 * 86400
    )


def _message(raw: bytes | None) -> str:
    """A server's error message: vLLM's `{"error": {"message": ...}}`, else the text, cut to
    `MAX_MESSAGE` characters."""
    if raw is None:
        return f"(error body over {MAX_BODY} bytes or compressed: not read)"
    message = None
    try:
        error = json.loads(raw)["error"]
        message = error["message"] if isinstance(error, Mapping) else None
    except (ValueError, RecursionError, KeyError, TypeError):
        pass
    if not isinstance(message, str):
        message = raw[: MAX_MESSAGE * 4].decode("utf-8", "replace").strip()
    return _cut(message)


def _cut(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


class VLLMAdminClient:
    """Calls to admin ports, each with the operator's token for the `audience` it names (the
    VLLMDeployment the pod serves: `model.builders.admin_audience`)."""

    def __init__(self, tokens: AdminTokens) -> None:
        self.tokens = tokens
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64),
            auto_decompress=False,
            headers={"Accept-Encoding": "identity"},
        )

    async def close(self) -> None:
        await self._session.close()

    def _headers(self, audience: str) -> dict[str, str]:
        return {"Authorization": self.tokens.authorization(audience)}

    async def report(self, url: str, audience: str) -> ServerReport | None:
        """The server's adapters, or None if it does not serve (yet), or answers anything but
        vLLM's `/v1/models` (too long, not JSON, another shape, an instance id too long)."""
        try:
            # Never follow a redirect: a tenant's server could send the operator's calls (and
            # its network position, which other tenants' admin ports admit) anywhere.
            async with self._session.get(
                f"{url}/v1/models",
                headers=self._headers(audience),
                timeout=PROBE_TIMEOUT,
                allow_redirects=False,
            ) as response:
                if response.status != 200:
                    return None
                raw = await _read_capped(response)
                instance = response.headers.get(INSTANCE_HEADER, "")
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        adapters = None if raw is None else _adapters(raw)
        if adapters is None or len(instance) > MAX_INSTANCE:
            return None
        return ServerReport(instance, adapters)

    async def startup(self, url: str) -> StartupReport | None:
        """How far a starting server is, from `/ready` on its API port (no credential: the
        early server answers it from the first second), or None if it does not answer that."""
        try:
            async with self._session.get(
                f"{url}/ready", timeout=PROBE_TIMEOUT, allow_redirects=False
            ) as response:
                if response.status not in (200, 503):
                    return None
                raw = await _read_capped(response, MAX_READY_BODY)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        return None if raw is None else _startup_report(raw)

    async def load(
        self, url: str, name: str, path: str, *, inplace: bool, audience: str
    ) -> CallResult:
        body = {"lora_name": name, "lora_path": path, "load_inplace": inplace}
        result = await self._post(f"{url}/v1/load_lora_adapter", body, audience)
        if not result.ok and "already been loaded" in result.message:
            result = CallResult(True)  # someone (an earlier, interrupted reconcile) was first
        return result

    async def unload(self, url: str, name: str, *, audience: str) -> CallResult:
        result = await self._post(f"{url}/v1/unload_lora_adapter", {"lora_name": name}, audience)
        if not result.ok and result.message.startswith("404"):
            result = CallResult(True)  # not loaded: that is what we wanted
        return result

    async def _post(self, url: str, body: dict[str, Any], audience: str) -> CallResult:
        try:
            async with self._session.post(
                url,
                json=body,
                headers=self._headers(audience),
                timeout=CALL_TIMEOUT,
                allow_redirects=False,  # see `report`
            ) as response:
                if response.status == 200:
                    return CallResult(True)
                message = _message(await _read_capped(response))
                return CallResult(False, f"{response.status}: {message}")
        except (aiohttp.ClientError, TimeoutError) as e:
            return CallResult(False, _cut(f"server unreachable: {e or type(e).__name__}"))
