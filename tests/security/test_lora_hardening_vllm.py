"""Attacks on the runtime LoRA routes of a real `vllm-ext-serve` (one server for the module):
`--root-path /` (which a VLLMDeployment's `engine.extraArgs` can set) with `--admin-port`, and
`--lora-allowed-roots`. Requests go over raw sockets, so that the request target reaches the
server exactly as written (percent-encodings, absolute-form targets)."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import httpx
import pytest

from vllm_testkit.servers import ServerProcess, ext_server, free_port

pytestmark = pytest.mark.vllm

MANAGED_ELSEWHERE = "LoRA adapters are managed on the admin port"


@pytest.fixture(scope="module")
def lora_root(tmp_path_factory: pytest.TempPathFactory, tiny_lora: Path) -> Path:
    """The allowed root: a real adapter (`good`), and a symlink to one outside the root
    (`escape`: the generated adapter, which lives outside it)."""
    root = tmp_path_factory.mktemp("lora-root")
    shutil.copytree(tiny_lora, root / "good")
    (root / "escape").symlink_to(tiny_lora, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def server(tiny_model: Path, lora_root: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("logs") / "hardening-server.log"
    proc = ext_server(
        tiny_model,
        log,
        "--root-path", "/",
        "--enable-lora", "--max-loras", "2", "--max-lora-rank", "8",
        "--lora-allowed-roots", str(lora_root),
    )  # fmt: skip
    proc.admin_port = free_port()
    proc.start()
    try:
        yield proc.wait_ready()
    finally:
        assert proc.stop() == 0, proc.log()[-3000:]


def raw(port: int, method: str, target: str, body: object = None) -> tuple[int, bytes]:
    """Sends `method target HTTP/1.1` as written; (status, body)."""
    data = b"" if body is None else json.dumps(body).encode()
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head.encode() + data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def loaded_adapters(server: ServerProcess) -> set[str]:
    models = httpx.get(f"{server.admin_url}/v1/models", timeout=30).json()["data"]
    return {m["id"] for m in models if m.get("parent")}


# --- item 8: the API port has no LoRA admin routes, whatever the request target ---------------

LOAD = "/v1/load_lora_adapter"
BYPASSES = [
    ("POST", LOAD, "load"),
    ("POST", "/v1/load%5Flora_adapter", "load"),  # percent-encoded `_`
    ("POST", "/v1%2Fload_lora_adapter", "load"),  # percent-encoded `/`
    ("POST", "/v1/load_lora%5fadapter", "load"),
    ("POST", "//v1/load_lora_adapter", "load"),
    ("POST", "http://x/v1/load_lora_adapter", "load"),  # absolute-form request target
    ("POST", "http://127.0.0.1/v1/load%5Flora_adapter", "load"),
    ("POST", "/adapters", "sagemaker"),  # SageMaker's routes, on the same handlers
    ("POST", "http://x/adapters", "sagemaker"),
    ("POST", "/v1/unload_lora_adapter", "unload"),
    ("DELETE", "/adapters/{name}", None),
    ("DELETE", "http://x/adapters/{name}", None),
    ("DELETE", "/adapters%2F{name}", None),
]


@pytest.mark.parametrize(("method", "target", "kind"), BYPASSES)
def test_the_api_port_serves_no_lora_admin_route(
    server: ServerProcess, lora_root: Path, method: str, target: str, kind: str | None
):
    """Each request would load a good adapter, or unload one, if it reached vLLM's handlers."""
    good = str(lora_root / "good")
    if kind in ("unload", None):  # an adapter for the unload and delete attempts to remove
        kept = {"lora_name": "kept", "lora_path": good}
        assert raw(server.admin_port, "POST", LOAD, kept)[0] in (200, 400)  # 400: loaded already
        assert "kept" in loaded_adapters(server)
    body = {
        "load": {"lora_name": "via-api-port", "lora_path": good},
        "sagemaker": {"name": "via-api-port", "src": good},
        "unload": {"lora_name": "kept"},
    }.get(kind or "")
    status, reply = raw(server.port, method, target.format(name="kept"), body)
    assert status == 404, reply
    assert json.loads(reply)["error"]["message"] == MANAGED_ELSEWHERE
    adapters = loaded_adapters(server)
    assert "via-api-port" not in adapters
    if kind in ("unload", None):
        assert "kept" in adapters


def test_the_api_port_still_serves_the_api(server: ServerProcess):
    status, reply = raw(server.port, "GET", "/v1/models")
    assert status == 200 and json.loads(reply)["data"]
    assert raw(server.port, "GET", "/ready")[0] == 200
    assert raw(server.port, "POST", "/v1/nothing-here")[0] == 404


# --- item 12: LoRA sources outside --lora-allowed-roots are refused ---------------------------


def load(server: ServerProcess, name: str, path: str) -> tuple[int, str]:
    status, reply = raw(server.admin_port, "POST", LOAD, {"lora_name": name, "lora_path": path})
    message = json.loads(reply)["error"]["message"] if status != 200 else reply.decode()
    return status, message


def test_an_adapter_inside_the_root_loads(server: ServerProcess, lora_root: Path):
    status, message = load(server, "inside", str(lora_root / "good"))
    assert status == 200, message
    assert "inside" in loaded_adapters(server)
    # Through SageMaker's route too (it calls the same check).
    sagemaker = {"name": "inside-sm", "src": str(lora_root / "good")}
    assert raw(server.admin_port, "POST", "/adapters", sagemaker)[0] == 200
    assert "inside-sm" in loaded_adapters(server)


@pytest.mark.parametrize(
    "source",
    [
        "{root}/escape",  # a symlink inside the root to an adapter outside it
        "{root}/../{outside}",  # `..` out of the root
        "{root}/good/../../{outside}",
        "{outside_abs}",  # an adapter outside every root
    ],
)
def test_a_local_source_outside_the_roots_is_a_400(
    server: ServerProcess, lora_root: Path, tiny_lora: Path, source: str
):
    outside = tiny_lora.relative_to(lora_root.parent)  # both live under pytest's temp root
    path = source.format(root=lora_root, outside=outside, outside_abs=tiny_lora)
    status, message = load(server, "escaped", path)
    assert status == 400, message
    assert "outside the allowed roots" in message and str(lora_root) in message
    assert "escaped" not in loaded_adapters(server)
    sagemaker = {"name": "escaped-sm", "src": path}
    status, reply = raw(server.admin_port, "POST", "/adapters", sagemaker)
    assert status == 400, reply
    assert "escaped-sm" not in loaded_adapters(server)


@pytest.mark.parametrize("source", ["a/b/c", "../x", "./x", "x/..", "hf://org/name", "~/x", "org"])
def test_a_source_neither_absolute_nor_org_name_is_a_400(server: ServerProcess, source: str):
    status, message = load(server, "bad-source", source)
    assert status == 400, message
    assert "neither an absolute path nor a hub id ORG/NAME" in message
