"""The admin port's credential: short-lived tokens the operator signs, which the server checks
with the operator's public key.

The operator holds an Ed25519 private key (a Secret in its own namespace, which no model pod
can read); the servers get only the public key and their audience (`NAMESPACE/NAME` of their
VLLMDeployment) on the command line. Every admin call carries `Authorization: Bearer <JWT>`:
algorithm EdDSA, `aud` the audience, `iat` and `exp` at most `MAX_LIFETIME` apart. So nothing a
tenant can read opens another tenant's admin port (a token names one deployment and expires in
a minute), and the users' own API keys are not the admin port's business.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

ALGORITHM = "EdDSA"
MAX_LIFETIME = 600  # seconds between a token's `iat` and `exp`
LEEWAY = 60  # seconds of clock difference between the operator and the node

_UNAUTHORIZED = 401


def parse_public_key(text: str) -> Ed25519PublicKey:
    """The key `--admin-token-public-key` gives: 32 raw bytes in base64 (the command line has
    checked them)."""
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))


class AdminTokenVerifier:
    """Checks the `Authorization` header of an admin call."""

    def __init__(self, public_key: Ed25519PublicKey, audience: str) -> None:
        self.public_key = public_key
        self.audience = audience

    def refusal(self, authorization: str | None) -> str | None:
        """Why a call with this `Authorization` header value is refused, or None."""
        if not authorization:
            return "an operator token is required on the admin port"
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "an operator token is required on the admin port (Authorization: Bearer)"
        try:
            claims = jwt.decode(
                token.strip(),
                self.public_key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                leeway=LEEWAY,
                options={"require": ["aud", "exp", "iat"], "strict_aud": True},
            )
        except jwt.InvalidTokenError as e:
            return f"invalid operator token: {e}"
        lifetime = claims["exp"] - claims["iat"]
        if not isinstance(lifetime, (int, float)) or lifetime > MAX_LIFETIME:
            return f"invalid operator token: valid for over {MAX_LIFETIME} s"
        return None


class AdminAuthMiddleware:
    """Pure ASGI: every HTTP or WebSocket request on the app it wraps needs a token that
    `verifier` accepts; others get a 401 in vLLM's error form (the reason, no token echoed)."""

    def __init__(self, app: Any, verifier: AdminTokenVerifier) -> None:
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        reason = self.verifier.refusal(header.decode("latin-1") if header is not None else None)
        if reason is None:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return None
        body = json.dumps(
            {"error": {"message": reason, "type": "Unauthorized", "code": _UNAUTHORIZED}}
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b'Bearer realm="vllm-admin"'),
        ]
        await send({"type": "http.response.start", "status": _UNAUTHORIZED, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return None
