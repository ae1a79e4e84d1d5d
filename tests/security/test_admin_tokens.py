"""Item 9: admin calls carry a credential of the operator's. The operator's signer
(`vllm_operator.clients.admin_token`) against the server's check
(`vllm_server_ext.admin_auth`), and the attacks on the check: no token, the user's API key, a
token for another deployment, an expired or too long-lived one, another key, algorithm
confusion. The same check in a real server: `test_admin_auth_vllm.py`."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vllm_operator.clients.admin_token import LIFETIME, AdminKeyError, AdminTokens
from vllm_operator.config import ADMIN_KEY_FILE_ENV
from vllm_operator.model.builders import admin_audience, build_all
from vllm_operator.model.spec import parse_deployment
from vllm_server_ext.admin_auth import (
    MAX_LIFETIME,
    AdminAuthMiddleware,
    AdminTokenVerifier,
    parse_public_key,
)
from vllm_testkit.chart import render
from vllm_testkit.samples import IMAGES, vllmd

AUDIENCE = "team-a/llama"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def verifier_for(tokens: AdminTokens, audience: str = AUDIENCE) -> AdminTokenVerifier:
    return AdminTokenVerifier(parse_public_key(tokens.public_key), audience)


def test_the_operators_token_opens_its_deployments_admin_port_only():
    tokens = AdminTokens.generate()
    header = tokens.authorization(AUDIENCE)
    assert verifier_for(tokens).refusal(header) is None
    # The same token on another deployment's pods (another tenant's, or another model of the
    # same namespace) is refused.
    for other in ("team-b/llama", "team-a/llama-2", "team-a", ""):
        assert "Audience" in (verifier_for(tokens, other or "x").refusal(header) or "")


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "the-users-api-key",
        "Bearer the-users-api-key",  # what vLLM's --api-key takes: not a credential here
        "Bearer a.b.c",
    ],
)
def test_calls_without_an_operator_token_are_refused(header: str | None):
    assert verifier_for(AdminTokens.generate()).refusal(header)


def test_a_token_of_another_key_is_refused():
    ours, theirs = AdminTokens.generate(), AdminTokens.generate()
    refusal = verifier_for(ours).refusal(theirs.authorization(AUDIENCE))
    assert refusal == "invalid operator token: Signature verification failed"


def test_tokens_expire_and_are_renewed_before():
    clock = Clock(time.time() - LIFETIME / 2 - 1)  # its renewal falls on the real now
    tokens = AdminTokens(Ed25519PrivateKey.generate(), clock=clock)
    verifier = verifier_for(tokens)
    first = tokens.authorization(AUDIENCE)
    clock.now += LIFETIME / 2 - 1
    assert tokens.authorization(AUDIENCE) == first  # cached while fresh
    clock.now += 2
    renewed = tokens.authorization(AUDIENCE)
    assert renewed != first
    assert verifier.refusal(renewed) is None
    claims = jwt.decode(renewed.split()[1], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == LIFETIME

    # A token that expired over a minute ago (the leeway for clock differences) is refused.
    stale = Clock(time.time() - LIFETIME - 61)
    expired = AdminTokens(tokens._key, clock=stale).authorization(AUDIENCE)
    assert verifier.refusal(expired) == "invalid operator token: Signature has expired"


def forge(key: Any, algorithm: str, **claims: Any) -> str:
    now = int(time.time())
    payload = {"aud": AUDIENCE, "iat": now, "exp": now + 60, **claims}
    return "Bearer " + jwt.encode(payload, key, algorithm=algorithm)


def test_tokens_the_key_signs_must_still_be_short_lived_and_complete():
    key = Ed25519PrivateKey.generate()
    verifier = verifier_for(AdminTokens(key))
    now = int(time.time())
    assert verifier.refusal(forge(key, "EdDSA")) is None
    year = forge(key, "EdDSA", exp=now + 365 * 86400)
    assert verifier.refusal(year) == f"invalid operator token: valid for over {MAX_LIFETIME} s"
    for missing in ("aud", "iat", "exp"):
        payload = {"aud": AUDIENCE, "iat": now, "exp": now + 60}
        del payload[missing]
        token = "Bearer " + jwt.encode(payload, key, algorithm="EdDSA")
        assert f'"{missing}"' in (verifier.refusal(token) or ""), missing
    listed = forge(key, "EdDSA", aud=[AUDIENCE, "team-b/llama"])  # one token for many
    assert verifier.refusal(listed)


def test_algorithm_confusion_is_refused():
    """`alg: none`, and HMAC keyed with the public key (which every pod's arguments show)."""
    tokens = AdminTokens.generate()
    verifier = verifier_for(tokens)
    now = int(time.time())
    claims = {"aud": AUDIENCE, "iat": now, "exp": now + 60}
    unsigned = jwt.encode(claims, None, algorithm="none")
    assert verifier.refusal(f"Bearer {unsigned}")

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    import hashlib
    import hmac

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    for secret in (tokens.public_key.encode(), base64.b64decode(tokens.public_key)):
        mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
        assert verifier.refusal(f"Bearer {head}.{body}.{b64(mac)}")
    es256 = forge(ec.generate_private_key(ec.SECP256R1()), "ES256")
    assert verifier.refusal(es256)


# --- the middleware on the admin port -------------------------------------------------------


def call(app: Any, headers: list[tuple[bytes, bytes]], kind: str = "http") -> list[dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": kind, "method": "POST", "path": "/v1/load_lora_adapter", "headers": headers}
    asyncio.run(app(scope, receive, send))
    return sent


def test_the_middleware_answers_401_and_never_reaches_the_app():
    reached = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"loaded"})

    tokens = AdminTokens.generate()
    guarded = AdminAuthMiddleware(app, verifier_for(tokens))
    refused = call(guarded, [(b"authorization", b"Bearer the-users-api-key")])
    assert refused[0]["status"] == 401
    assert (b"www-authenticate", b'Bearer realm="vllm-admin"') in refused[0]["headers"]
    error = json.loads(refused[1]["body"])["error"]
    assert (error["type"], error["code"]) == ("Unauthorized", 401)
    assert "the-users-api-key" not in refused[1]["body"].decode()
    assert call(guarded, [], kind="websocket") == [{"type": "websocket.close", "code": 1008}]
    assert reached == []

    good = tokens.authorization(AUDIENCE).encode()
    assert call(guarded, [(b"authorization", good)])[0]["status"] == 200
    assert reached == ["/v1/load_lora_adapter"]


# --- the operator's side: the key, the pods' arguments -------------------------------------


def test_the_operator_reads_the_key_the_chart_generates(tmp_path: Path):
    """The chart's Secret holds Helm's `genPrivateKey "ed25519"` (real Helm renders it), and
    the operator's pod mounts it where `VLLM_OPERATOR_ADMIN_KEY_FILE` points."""
    objects = render()
    (secret,) = [o for o in objects if o["kind"] == "Secret"]
    assert secret["metadata"]["name"] == "vllm-admin-key"
    (operator,) = [o for o in objects if o["kind"] == "Deployment"]
    pod = operator["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    (mount,) = container["volumeMounts"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "vllm-admin-key"
    (item,) = volume["secret"]["items"]
    assert env[ADMIN_KEY_FILE_ENV] == f"{mount['mountPath']}/{item['path']}"

    path = tmp_path / item["path"]
    path.write_bytes(base64.b64decode(secret["data"][item["key"]]))
    tokens = AdminTokens.from_file(path)
    assert verifier_for(tokens).refusal(tokens.authorization(AUDIENCE)) is None


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "No such file or directory"),
        (b"not a key", "not an unencrypted PEM private key"),
        (
            ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            "not an Ed25519 private key",
        ),
    ],
)
def test_a_key_file_the_operator_cannot_use_is_named(
    tmp_path: Path, content: bytes | None, expected: str
):
    path = tmp_path / "key.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AdminKeyError, match=expected) as refused:
        AdminTokens.from_file(path)
    assert str(path) in str(refused.value)


def test_pods_get_the_public_key_and_their_audience_only():
    tokens = AdminTokens.generate()
    body = vllmd("llama", {"model": {"uri": "hf://org/model"}}, "team-a")
    objects = build_all(
        parse_deployment(body, IMAGES),
        monitoring_available=False,
        operator_namespace="vllm-system",
        admin_public_key=tokens.public_key,
    )
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    key_at, audience_at = (
        args.index("--admin-token-public-key"),
        args.index("--admin-token-audience"),
    )
    assert args[key_at + 1] == tokens.public_key
    assert args[audience_at + 1] == admin_audience("team-a", "llama") == "team-a/llama"
    rendered = yaml.safe_dump(objects)
    assert "PRIVATE" not in rendered and len(base64.b64decode(tokens.public_key)) == 32
