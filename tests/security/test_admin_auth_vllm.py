"""Item 9 against a real `vllm-ext-serve`, started as the operator starts its pods: an admin
port that takes only the operator's tokens (`--admin-token-public-key`, the audience of its
VLLMDeployment), beside a user's `--api-key` on the API port. Before, the admin port took
anything from anyone who reached the pod (or the user's API key, which the operator had to
read from the user's Secret)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import jwt
import pytest

from vllm_testkit.admin_key import KEY, PUBLIC_KEY
from vllm_testkit.servers import ServerProcess, ext_server, free_port

pytestmark = pytest.mark.vllm

AUDIENCE = "team-a/llama"
USER_KEY = "the-users-api-key"


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("logs") / "admin-auth-server.log"
    proc = ext_server(
        tiny_model,
        log,
        "--enable-lora", "--max-loras", "2", "--max-lora-rank", "8",
        "--api-key", USER_KEY,
        "--admin-token-public-key", PUBLIC_KEY, "--admin-token-audience", AUDIENCE,
        env={"VLLM_ENABLE_V1_MULTIPROCESSING": "0"},  # lighter: the engine in-process
    )  # fmt: skip
    proc.admin_port = free_port()
    proc.start()
    try:
        yield proc.wait_ready()
    finally:
        assert proc.stop() == 0, proc.log()[-3000:]


def token(audience: str = AUDIENCE, *, age: float = 0, lifetime: int = 120) -> str:
    issued = int(time.time() - age)
    claims = {"iss": "vllm-operator", "aud": audience, "iat": issued, "exp": issued + lifetime}
    return "Bearer " + jwt.encode(claims, KEY, algorithm="EdDSA")


def adapters(server: ServerProcess) -> set[str]:
    models = httpx.get(
        f"{server.admin_url}/v1/models", headers={"Authorization": token()}, timeout=30
    ).json()["data"]
    return {m["id"] for m in models if m.get("parent")}


@pytest.mark.parametrize(
    "authorization",
    [
        None,  # anyone who reaches the pod
        f"Bearer {USER_KEY}",  # the user's API key opens the API port, not the admin port
        "operator token for another deployment",
        "operator token, expired",
        "operator token, valid for a year",
        "token of another key",
    ],
)
def test_admin_calls_without_the_operators_token_are_refused(
    server: ServerProcess, tiny_lora: Path, authorization: str | None
):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    header = {
        "operator token for another deployment": token("team-b/llama"),
        "operator token, expired": token(age=300),
        "operator token, valid for a year": token(lifetime=365 * 86400),
        "token of another key": "Bearer "
        + jwt.encode(
            {"aud": AUDIENCE, "iat": int(time.time()), "exp": int(time.time()) + 60},
            Ed25519PrivateKey.generate(),
            algorithm="EdDSA",
        ),
    }.get(authorization or "", authorization)
    headers = {"Authorization": header} if header else {}
    load = {"lora_name": "intruder", "lora_path": str(tiny_lora)}
    with httpx.Client(base_url=server.admin_url, headers=headers, timeout=60) as admin:
        refused = admin.post("/v1/load_lora_adapter", json=load)
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["type"] == "Unauthorized"
        assert refused.headers["www-authenticate"] == 'Bearer realm="vllm-admin"'
        # Every route of the admin port, not only the LoRA ones.
        for method, path in [("GET", "/v1/models"), ("GET", "/metrics"), ("GET", "/health"),
                             ("POST", "/v1/completions"), ("OPTIONS", "/v1/load_lora_adapter")]:  # fmt: skip
            assert admin.request(method, path).status_code == 401, (method, path)
    assert "intruder" not in adapters(server)


def test_the_operators_token_loads_and_the_api_key_keeps_the_api_port(
    server: ServerProcess, tiny_lora: Path
):
    load = {"lora_name": "sql", "lora_path": str(tiny_lora)}
    operator = {"Authorization": token()}
    with httpx.Client(base_url=server.admin_url, headers=operator, timeout=60) as admin:
        assert admin.post("/v1/load_lora_adapter", json=load).status_code == 200
    assert "sql" in adapters(server)

    user = {"Authorization": f"Bearer {USER_KEY}"}
    completion = {"model": "sql", "prompt": "hello", "max_tokens": 2}
    with httpx.Client(base_url=server.url, timeout=60) as api:
        assert api.post("/v1/completions", json=completion).status_code == 401
        # The operator's token is no API key: the two credentials open one port each.
        assert api.post("/v1/completions", json=completion, headers=operator).status_code == 401
        assert api.post("/v1/completions", json=completion, headers=user).status_code == 200
        # The LoRA routes are still the admin port's alone, API key or not.
        refused = api.post("/v1/load_lora_adapter", json=load, headers=user)
        assert refused.status_code == 404, refused.text
        # Probes need no credential (vLLM guards /v1 only).
        assert api.get("/health").status_code == 200
        assert api.get("/ready").status_code == 200
