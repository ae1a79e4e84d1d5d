"""`ServerExtMiddleware`, driven as the pure ASGI callable it is: a test double stands in for
vLLM's app (`EchoApp`), everything else is real (`ServerExtension`, `ServerState`,
`LoadTracker`, `TokenLoad`); reports are read with the independent Envoy-rules parser. The real
server is covered in test_server_vllm and test_orca_vllm."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from vllm_server_ext.lifecycle import ServerState
from vllm_server_ext.load_tracker import EngineLoad, LoadTracker
from vllm_server_ext.routes import ServerExtension, ServerExtMiddleware
from vllm_server_ext.token_load import TokenLoad
from vllm_testkit.envoy_orca import parse

API_PORT, ADMIN_PORT = 8000, 8001
ORCA = b"endpoint-load-metrics"
INSTANCE = b"vllm-instance-id"
VLLM_OWN_REPORT = b"TEXT named_metrics.kv_cache_usage=0.5,named_metrics.num_requests_waiting=0"
ADMIN_MESSAGE = "LoRA adapters are managed on the admin port"


class AppFailed(Exception):
    pass


class EchoApp:
    """Test double of vLLM's app: answers every request with `status`, `headers` and the body
    in `chunks` (several `http.response.body` messages, as a streaming response sends), or
    raises `AppFailed` before or after the response starts. Keeps what it was asked and sent."""

    def __init__(
        self,
        status: int = 200,
        headers: list[tuple[bytes, bytes]] | None = None,
        chunks: tuple[bytes, ...] = (b"{}",),
        fail: str | None = None,  # "before" or "after" the response starts
    ) -> None:
        self.status = status
        self.headers = headers if headers is not None else [(b"content-type", b"application/json")]
        self.chunks = chunks
        self.fail = fail
        self.scopes: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        if scope["type"] != "http":
            return
        if self.fail == "before":
            raise AppFailed("before the response")
        await self._send(send, {"type": "http.response.start", "status": self.status,
                                "headers": list(self.headers)})  # fmt: skip
        for i, chunk in enumerate(self.chunks):
            more = i < len(self.chunks) - 1
            await self._send(send, {"type": "http.response.body", "body": chunk, "more_body": more})
            if self.fail == "after":
                raise AppFailed("in the middle of the body")

    async def _send(self, send: Any, message: dict[str, Any]) -> None:
        self.sent.append(dict(message))
        await send(message)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def extension(
    formats: tuple[str, ...] = ("JSON", "TEXT", "BIN"),
    admin_port: int | None = ADMIN_PORT,
    clock: FakeClock | None = None,
) -> ServerExtension:
    tracker = LoadTracker(token_load=TokenLoad(), max_num_seqs=8, clock=clock or FakeClock())
    return ServerExtension(ServerState(), tracker, formats, admin_port=admin_port)


def http_scope(
    ext: ServerExtension,
    path: str = "/v1/completions",
    *,
    method: str = "POST",
    port: int | None = API_PORT,
    root_path: str = "",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> dict[str, Any]:
    """What uvicorn and Starlette hand the middleware: `app` is the app it is installed in."""
    return {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": root_path,
        "headers": headers or [(b"host", b"model"), (b"content-type", b"application/json")],
        "server": ("10.0.0.5", port) if port else None,
        "app": SimpleNamespace(state=SimpleNamespace(server_ext=ext)),
    }


def run(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    """Calls `app` through the middleware; the messages the server would have been sent."""
    out: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        out.append(message)

    asyncio.run(ServerExtMiddleware(app)(scope, receive, send))
    return out


def headers_of(messages: list[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    (start,) = [m for m in messages if m["type"] == "http.response.start"]
    return list(start["headers"])


def values(messages: list[dict[str, Any]], name: bytes) -> list[bytes]:
    return [v for k, v in headers_of(messages) if k.lower() == name]


def counted(ext: ServerExtension, clock: FakeClock) -> tuple[float, float]:
    """(requests, errors) counted so far, read from the next report's `rps_fractional` and `eps`:
    two seconds later, rates over the tracker's window are counts / 2."""
    clock.now += 2
    report = ext.tracker.snapshot()
    return report.rps_fractional * 2, report.eps * 2


# --- the instance id --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "port", "formats"),
    [
        ("/v1/completions", API_PORT, ("TEXT",)),
        ("/v1/completions", API_PORT, ()),  # ORCA off
        ("/health", API_PORT, ("TEXT",)),
        ("/metrics", API_PORT, ("TEXT",)),
        ("/v1/load_lora_adapter", API_PORT, ("TEXT",)),
        ("/v1/load_lora_adapter", ADMIN_PORT, ("TEXT",)),
    ],
)
def test_every_response_names_the_instance(path: str, port: int, formats: tuple[str, ...]):
    ext = extension(formats)
    messages = run(EchoApp(), http_scope(ext, path, port=port))
    assert values(messages, INSTANCE) == [ext.state.instance_id.encode()]


def test_other_scopes_pass_straight_through():
    app = EchoApp()
    scope = {"type": "lifespan"}  # no `app` in it yet: the middleware must not look
    assert run(app, scope) == []
    assert app.scopes == [scope]


# --- ORCA reports -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/v1/completions", "/v1/chat/completions", "/v1/models", "/v1/embeddings"]
)
def test_one_report_on_every_openai_api_response(path: str):
    ext = extension(("TEXT",))
    ext.tracker.record_engine(0, EngineLoad(num_requests_running=2, kv_cache_usage=0.625))
    messages = run(EchoApp(), http_scope(ext, path))
    (value,) = values(messages, ORCA)
    report = parse(value.decode())
    assert report.application_utilization == 0.625
    assert report.named_metrics["num_requests_running"] == 2


@pytest.mark.parametrize("name", [ORCA, b"Endpoint-Load-Metrics"])
def test_the_apps_own_report_is_replaced_not_repeated(name: bytes):
    """vLLM adds its own two-metric report when the request names a format: only ours goes
    out, and the app's other headers stay as they were, in order."""
    ext = extension(("TEXT",))
    own = [(b"content-type", b"application/json"), (name, VLLM_OWN_REPORT), (b"x-a", b"1")]
    messages = run(
        EchoApp(headers=own),
        http_scope(ext, headers=[(b"endpoint-load-metrics-format", b"text")]),
    )
    assert values(messages, ORCA) == [ext.tracker.header("TEXT")]
    assert headers_of(messages)[:2] == [(b"content-type", b"application/json"), (b"x-a", b"1")]


@pytest.mark.parametrize(
    ("asked", "prefix"),
    [
        (None, "JSON "),  # no header: the first enabled
        (b"text", "TEXT "),
        (b"TEXT", "TEXT "),
        (b"Bin", "BIN "),
        (b" json ", "JSON "),
        (b"xml", "JSON "),  # unknown: the first enabled, not an error
    ],
)
def test_the_request_header_picks_the_format_in_any_case(asked: bytes | None, prefix: str):
    ext = extension(("JSON", "TEXT", "BIN"))
    headers = [(b"host", b"model")]
    if asked is not None:
        headers.append((b"endpoint-load-metrics-format", asked))
    (value,) = values(run(EchoApp(), http_scope(ext, headers=headers)), ORCA)
    assert value.decode().startswith(prefix)
    parse(value.decode())


def test_a_format_not_enabled_gets_the_first_enabled():
    ext = extension(("TEXT", "JSON"))
    headers = [(b"endpoint-load-metrics-format", b"bin")]
    (value,) = values(run(EchoApp(), http_scope(ext, headers=headers)), ORCA)
    assert value.startswith(b"TEXT ")


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics", "/orca", "/version", "/v1"])
def test_no_report_outside_the_openai_api(path: str):
    ext = extension(("TEXT",))
    app = EchoApp(headers=[(ORCA, VLLM_OWN_REPORT)])  # not ours to touch there
    assert values(run(app, http_scope(ext, path, method="GET")), ORCA) == [VLLM_OWN_REPORT]
    assert values(run(EchoApp(), http_scope(ext, path, method="GET")), ORCA) == []


def test_no_report_with_orca_off():
    ext = extension(())
    messages = run(EchoApp(headers=[(ORCA, VLLM_OWN_REPORT)]), http_scope(ext))
    assert values(messages, ORCA) == [VLLM_OWN_REPORT]  # vLLM's own, left alone
    assert values(run(EchoApp(), http_scope(ext)), ORCA) == []


def test_streaming_bodies_pass_through_untouched():
    ext = extension(("TEXT",))
    chunks = (b'data: {"a": 1}\n\n', b'data: {"a": 2}\n\n', b"data: [DONE]\n\n")
    app = EchoApp(headers=[(b"content-type", b"text/event-stream")], chunks=chunks)
    messages = run(app, http_scope(ext))
    assert [m["type"] for m in messages] == ["http.response.start"] + ["http.response.body"] * 3
    assert messages[1:] == app.sent[1:]  # every body message as sent, in order, unchanged
    assert [m["more_body"] for m in messages[1:]] == [True, True, False]
    assert len(values(messages, ORCA)) == 1
    assert messages[0]["status"] == 200


# --- LoRA admin routes on the admin port only -------------------------------------------------

ADMIN_ROUTES = [
    ("POST", "/v1/load_lora_adapter", ""),
    ("POST", "/v1/unload_lora_adapter", ""),
    ("POST", "/adapters", ""),  # vLLM's SageMaker routes: the same handlers
    ("DELETE", "/adapters/sql", ""),
    ("POST", "/prefix/v1/load_lora_adapter", "/prefix"),  # --root-path /prefix
    ("DELETE", "/prefix/adapters/sql", "/prefix"),
]


@pytest.mark.parametrize(("method", "path", "root_path"), ADMIN_ROUTES)
@pytest.mark.parametrize("port", [API_PORT, 9999, None])  # any port but the admin one, or a socket
def test_the_middleware_refuses_no_path(method: str, path: str, root_path: str, port: int | None):
    """Keeping the LoRA routes off the API port is the job of the app that port serves, which
    lacks them (`vllm_0_32.api.split_for_admin_port`, tested against real vLLM in
    tests/security), not of a path check here."""
    ext = extension(("TEXT",))
    app = EchoApp()
    scope = http_scope(ext, path, method=method, port=port, root_path=root_path)
    messages = run(app, scope)
    assert app.scopes == [scope]
    assert messages[0]["status"] == 200


@pytest.mark.parametrize(("method", "path", "root_path"), ADMIN_ROUTES)
def test_lora_routes_are_served_on_the_admin_port_without_report_or_count(
    method: str, path: str, root_path: str
):
    clock = FakeClock()
    ext = extension(("TEXT",), clock=clock)
    app = EchoApp()
    scope = http_scope(ext, path, method=method, port=ADMIN_PORT, root_path=root_path)
    messages = run(app, scope)
    assert app.scopes == [scope]
    assert messages[0]["status"] == 200
    assert values(messages, ORCA) == []
    assert counted(ext, clock) == (0, 0)


def test_the_admin_port_serves_the_whole_app_uncounted_and_unreported():
    """The operator's `/v1/models` calls on the admin port are not load."""
    clock = FakeClock()
    ext = extension(("TEXT",), clock=clock)
    for status in (200, 500, 503):
        messages = run(EchoApp(status=status), http_scope(ext, "/v1/models", port=ADMIN_PORT))
        assert messages[0]["status"] == status
        assert values(messages, ORCA) == []
    assert counted(ext, clock) == (0, 0)


@pytest.mark.parametrize(("method", "path", "root_path"), ADMIN_ROUTES)
def test_without_an_admin_port_the_lora_routes_are_the_apps(method: str, path: str, root_path: str):
    ext = extension(("TEXT",), admin_port=None)
    app = EchoApp()
    messages = run(app, http_scope(ext, path, method=method, root_path=root_path))
    assert len(app.scopes) == 1
    assert messages[0]["status"] == 200


def test_other_routes_are_not_refused_on_the_api_port():
    ext = extension(("TEXT",))
    for path in ("/v1/completions", "/v1/models", "/adaptersx", "/v1/load_lora_adapterx"):
        app = EchoApp()
        assert run(app, http_scope(ext, path))[0]["status"] == 200
        assert len(app.scopes) == 1, path


# --- requests and errors counted for rps_fractional and eps -----------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [(200, False), (204, False), (400, False), (404, False), (429, False), (499, False),
     (500, True), (502, True), (503, True), (504, True)],
)  # fmt: skip
def test_requests_are_counted_and_5xx_as_errors(status: int, error: bool):
    clock = FakeClock()
    ext = extension(("TEXT",), clock=clock)
    run(EchoApp(status=status), http_scope(ext))
    assert counted(ext, clock) == (1, 1 if error else 0)


def test_eps_and_rps_over_a_mix_of_statuses():
    clock = FakeClock()
    ext = extension(("TEXT",), clock=clock)
    for status in [200] * 6 + [404, 500, 503, 500]:
        run(EchoApp(status=status), http_scope(ext))
    clock.now += 2
    report = parse(ext.tracker.header("TEXT").decode())  # as Envoy reads it
    assert (report.rps_fractional, report.eps) == (10 / 2, 3 / 2)


@pytest.mark.parametrize("when", ["before", "after"])
def test_an_exception_in_the_app_counts_as_an_error_and_propagates(when: str):
    clock = FakeClock()
    ext = extension(("TEXT",), clock=clock)
    with pytest.raises(AppFailed):
        run(EchoApp(fail=when), http_scope(ext))
    assert counted(ext, clock) == (1, 1)


def test_requests_outside_the_api_are_not_counted():
    clock = FakeClock()
    ext = extension(("TEXT",), clock=clock)
    for path in ("/health", "/ready", "/metrics", "/orca"):
        run(EchoApp(status=503), http_scope(ext, path, method="GET"))
    assert counted(ext, clock) == (0, 0)
