"""The operator's admin client against pods that answer what vLLM never would: a real aiohttp
server on a free port, each case an attack that worked before the fix.

- A 300 MiB `/v1/models` (declared in Content-Length, or streamed without one, or a gzip bomb)
  is not read on past 1 MiB: the report is None and the server could send only a little.
- JSON of another shape (`[]`, `{"data": "abc"}`, items without `id`, non-string ids or roots,
  nesting too deep for the parser), or an instance id of kilobytes (it goes into the status), is
  None for that pod, never an exception past the handler, and the other pods' reports are
  unaffected.
- A load that fails with a huge error body is not read whole, and the message that goes into
  the LoraAdapter's status is at most 1 KiB.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from vllm_operator.clients.admin_token import AdminTokens
from vllm_operator.clients.vllm_admin import VLLMAdminClient
from vllm_operator.model.adapters import ServerReport

pytestmark = pytest.mark.asyncio

MiB = 1 << 20
AUDIENCE = "team-a/m"
MAX_MESSAGE = 1024  # characters of a server's message in a LoraAdapter's status
CLAIMED = 300 * MiB  # what the hostile pod says it sends
GIVE_UP = 64 * MiB  # it stops there, so that a client that reads everything fails quickly
# What may be in flight when the client stops reading: its cap, aiohttp's buffer and the
# loopback socket buffers (tcp_rmem/tcp_wmem, a few MiB); far below GIVE_UP.
IN_FLIGHT = 16 * MiB

GOOD_MODELS = {
    "object": "list",
    "data": [
        {"id": "base", "root": "/models/base", "parent": None},
        {"id": "sql", "root": "/adapters/sql", "parent": "base"},
    ],
}
MALFORMED = {
    "a list": [],
    "a string": "abc",
    "null": None,
    "data a string": {"data": "abc"},
    "data missing": {"object": "list"},
    "data an object": {"data": {"id": "x"}},
    "an item not an object": {"data": ["sql"]},
    "an item without id": {"data": [{"root": "/a", "parent": "base"}]},
    "a numeric id": {"data": [{"id": 1}]},
    "a numeric id of an adapter": {"data": [{"id": 1, "root": "/a", "parent": "base"}]},
    "a numeric root": {"data": [{"id": "sql", "root": 5, "parent": "base"}]},
    "a list as root": {"data": [{"id": "sql", "root": ["/a"], "parent": "base"}]},
    "an object as parent": {"data": [{"id": "sql", "root": "/a", "parent": {"id": "base"}}]},
}


# A starting server's /ready, as vllm-ext-serve writes it.
STARTING = {
    "ready": False, "phase": "loading_model", "instance_id": "abc", "model": "m",
    "uptime_seconds": 840.5, "startup_seconds": {"starting": 0.1, "importing": 9.0,
                                                 "loading_model": 831.4},
}  # fmt: skip
BAD_READY = {
    "a list": [STARTING],
    "no phase": {k: v for k, v in STARTING.items() if k != "phase"},
    "a numeric phase": STARTING | {"phase": 3},
    "a long phase": STARTING | {"phase": "p" * 65},
    "a negative uptime": STARTING | {"uptime_seconds": -1},
    "a boolean uptime": STARTING | {"uptime_seconds": True},
    "a string time in phase": STARTING | {"startup_seconds": {"loading_model": "long"}},
    "a huge time in phase": STARTING | {"startup_seconds": {"loading_model": 1e300}},
    "phases not an object": STARTING | {"startup_seconds": [1, 2]},
}


@dataclass
class HostilePod:
    """What the server sent on its streaming routes, and whether those handlers are done."""

    sent: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    victim_calls: int = 0

    async def stream(
        self, request: web.Request, *, status: int, declared: bool
    ) -> web.StreamResponse:
        """`CLAIMED` bytes of JSON-looking padding, written lazily (64 KiB, then wait for the
        socket), counting what went out; gives up at `GIVE_UP`."""
        response = web.StreamResponse(status=status)
        response.content_type = "application/json"
        if declared:
            response.content_length = CLAIMED
        chunk = b" " * (64 << 10)
        try:
            await response.prepare(request)
            await response.write(b'{"error": {"message": "')
            while self.sent < min(CLAIMED, GIVE_UP):
                await response.write(chunk)
                self.sent += len(chunk)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client hung up: what we wanted
        finally:
            self.done.set()
        return response

    async def finished(self) -> int:
        await asyncio.wait_for(self.done.wait(), 10)
        return self.sent


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(body).encode(), status=status, content_type="application/json"
    )


@pytest_asyncio.fixture
async def hostile() -> AsyncIterator[tuple[str, HostilePod]]:
    pod = HostilePod()
    app = web.Application()

    async def models(request: web.Request) -> web.StreamResponse:
        case = request.match_info["case"]
        if case == "good":
            return _json(GOOD_MODELS)
        if case == "long-instance":
            response = _json(GOOD_MODELS)
            response.headers["vllm-instance-id"] = "i" * 8000  # aiohttp takes up to 8190
            return response
        if case == "declared":
            return await pod.stream(request, status=200, declared=True)
        if case == "streamed":
            return await pod.stream(request, status=200, declared=False)
        if case == "gzip-bomb":
            # Valid JSON once inflated: 64 MiB of padding in a few hundred KiB.
            inflated = b'{"data": [], "pad": "' + b" " * GIVE_UP + b'"}'
            return web.Response(
                body=gzip.compress(inflated, 1),
                headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
            )
        if case == "deep":
            return web.Response(body=b"[" * 200_000 + b"]" * 200_000)
        if case == "not-utf8":
            return web.Response(body=b'{"data": [{"id": "\xff\xfe"}]}')
        if case == "redirect":  # to where the good answer is: following it would report
            raise web.HTTPTemporaryRedirect(str(request.url).replace("/redirect/", "/good/"))
        return _json(MALFORMED[case])

    async def load(request: web.Request) -> web.StreamResponse:
        case = request.match_info["case"]
        if case == "redirect":
            # To another pod's admin port, which admits the operator alone.
            raise web.HTTPTemporaryRedirect(str(request.url).replace("/redirect/", "/victim/"))
        if case == "victim":
            pod.victim_calls += 1
            return _json({"ok": True})
        if case == "huge-error":
            return await pod.stream(request, status=500, declared=False)
        if case == "huge-declared-error":
            return await pod.stream(request, status=500, declared=True)
        if case == "long-message":
            return _json({"error": {"message": "x" * (200 << 10), "code": 400}}, status=400)
        return _json({"error": {"message": "refused", "code": 400}}, status=400)

    async def ready(request: web.Request) -> web.StreamResponse:
        case = request.match_info["case"]
        if case == "good":
            return _json(STARTING, status=503)
        if case == "declared":
            return await pod.stream(request, status=503, declared=True)
        if case == "streamed":
            return await pod.stream(request, status=503, declared=False)
        if case == "redirect":
            raise web.HTTPTemporaryRedirect(str(request.url).replace("/redirect/", "/good/"))
        return _json(BAD_READY[case], status=503)

    app.router.add_get("/{case}/ready", ready)
    app.router.add_get("/{case}/v1/models", models)
    app.router.add_post("/{case}/v1/load_lora_adapter", load)
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), pod
    finally:
        await server.close()


@pytest_asyncio.fixture
async def client() -> AsyncIterator[VLLMAdminClient]:
    admin = VLLMAdminClient(AdminTokens.generate())
    try:
        yield admin
    finally:
        await admin.close()


async def test_redirects_from_a_pod_are_never_followed(hostile, client):
    """A tenant's server must not steer the operator's calls (with the operator's network
    position, which other tenants' admin ports admit) anywhere else."""
    base, pod = hostile
    assert await client.report(f"{base}/redirect", AUDIENCE) is None
    result = await client.load(f"{base}/redirect", "sql", "/a", inplace=True, audience=AUDIENCE)
    assert not result.ok and result.message.startswith("307")
    assert pod.victim_calls == 0


async def test_the_good_answer_is_still_read(hostile, client):
    base, _ = hostile
    assert await client.report(f"{base}/good", AUDIENCE) == ServerReport(
        "", {"sql": "/adapters/sql"}
    )


@pytest.mark.parametrize("case", ["declared", "streamed"])
async def test_a_300_mib_models_body_is_not_read_past_the_cap(hostile, client, case):
    base, pod = hostile
    assert await client.report(f"{base}/{case}", AUDIENCE) is None
    sent = await pod.finished()
    assert sent < IN_FLIGHT, (
        f"the client read {sent / MiB:.0f} MiB of a {CLAIMED / MiB:.0f} MiB body"
    )


async def test_a_gzip_bomb_is_not_inflated(hostile, client):
    base, _ = hostile
    assert await client.report(f"{base}/gzip-bomb", AUDIENCE) is None


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_malformed_models_json_is_no_report(hostile, client, case):
    base, _ = hostile
    assert await client.report(f"{base}/{case}", AUDIENCE) is None


@pytest.mark.parametrize("case", ["deep", "not-utf8", "long-instance"])
async def test_unparsable_models_bodies_are_no_report(hostile, client, case):
    base, _ = hostile
    assert await client.report(f"{base}/{case}", AUDIENCE) is None


async def test_one_malformed_pod_does_not_hide_the_others(hostile, client):
    base, _ = hostile
    reports = await asyncio.gather(
        client.report(f"{base}/a list", AUDIENCE),
        client.report(f"{base}/good", AUDIENCE),
        client.report(f"{base}/a numeric id", AUDIENCE),
    )
    assert reports == [None, ServerReport("", {"sql": "/adapters/sql"}), None]


@pytest.mark.parametrize("case", ["huge-error", "huge-declared-error"])
async def test_a_huge_error_body_on_load_is_not_read_whole(hostile, client, case):
    base, pod = hostile
    result = await client.load(
        f"{base}/{case}", "sql", "/adapters/sql", inplace=False, audience=AUDIENCE
    )
    sent = await pod.finished()
    assert not result.ok
    assert result.message.startswith("500: ")
    assert len(result.message) <= MAX_MESSAGE + len("500: ")
    assert sent < IN_FLIGHT, f"the client read {sent / MiB:.0f} MiB of an error body"
    assert "not read" in result.message  # says why there is no message


async def test_a_long_error_message_is_cut_for_the_status(hostile, client):
    base, _ = hostile
    result = await client.load(
        f"{base}/long-message", "sql", "/a", inplace=False, audience=AUDIENCE
    )
    assert not result.ok
    assert result.message.startswith("400: xxx")
    assert len(result.message) <= MAX_MESSAGE + len("400: ")


async def test_a_short_error_message_is_kept_as_is(hostile, client):
    base, _ = hostile
    result = await client.load(f"{base}/refused", "sql", "/a", inplace=False, audience=AUDIENCE)
    assert (result.ok, result.message) == (False, "400: refused")


# --- /ready of a starting server (the VLLMDeployment's progress) ----------------------------


async def test_a_starting_servers_ready_body_is_read_for_its_phase(hostile, client):
    base, _ = hostile
    report = await client.startup(f"{base}/good")
    assert (report.phase, report.phase_seconds, report.uptime_seconds) == (
        "loading_model", 831.4, 840.5,
    )  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_READY))
async def test_a_ready_body_of_another_shape_is_no_report(hostile, client, case):
    base, _ = hostile
    assert await client.startup(f"{base}/{case}") is None


@pytest.mark.parametrize("case", ["declared", "streamed"])
async def test_a_huge_ready_body_is_not_read(hostile, client, case):
    base, pod = hostile
    assert await client.startup(f"{base}/{case}") is None
    assert await pod.finished() < IN_FLIGHT


async def test_a_ready_redirect_is_not_followed(hostile, client):
    base, _ = hostile
    assert await client.startup(f"{base}/redirect") is None
