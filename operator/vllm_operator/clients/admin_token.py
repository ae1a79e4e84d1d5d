"""The operator's credential for the servers' admin ports: short-lived tokens signed with its
Ed25519 key.

The private key stays with the operator (a Secret in its own namespace, mounted as a file: the
chart makes one); each model pod is started with the public key and its audience,
`NAMESPACE/NAME` of its VLLMDeployment (`vllm-ext-serve --admin-token-public-key
--admin-token-audience`). A token is a JWT (EdDSA) naming that audience and valid for
`LIFETIME` seconds, so a token seen by one pod opens no other deployment's admin port and is soon
worthless. The operator needs no API key of its users, and no Secret of theirs.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ALGORITHM = "EdDSA"
ISSUER = "vllm-operator"
LIFETIME = 120  # seconds; a token is renewed once half of it is gone


class AdminKeyError(ValueError):
    """A key file the operator cannot use; the message says why."""


class AdminTokens:
    def __init__(self, key: Ed25519PrivateKey, *, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}  # audience -> (token, renew after)
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public_key = base64.b64encode(raw).decode()  # as --admin-token-public-key takes it

    @classmethod
    def generate(cls) -> AdminTokens:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_file(cls, path: str | Path) -> AdminTokens:
        """The key in a PEM file (PKCS#8, as Helm's `genPrivateKey "ed25519"` and
        `openssl genpkey -algorithm ed25519` write it)."""
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise AdminKeyError(f"{path}: {e.strerror}") from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as e:
            raise AdminKeyError(f"{path}: not an unencrypted PEM private key ({e})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise AdminKeyError(f"{path}: not an Ed25519 private key")
        return cls(key)

    def authorization(self, audience: str) -> str:
        """The `Authorization` header value for a call to `audience`'s admin ports."""
        now = self._clock()
        token, renew_after = self._tokens.get(audience, ("", 0.0))
        if now >= renew_after:
            issued = int(now)
            claims = {"iss": ISSUER, "aud": audience, "iat": issued, "exp": issued + LIFETIME}
            token = jwt.encode(claims, self._key, algorithm=ALGORITHM)
            if len(self._tokens) > 4096:  # deployments come and go: drop what is stale
                self._tokens = {a: t for a, t in self._tokens.items() if t[1] > now}
            self._tokens[audience] = (token, issued + LIFETIME / 2)
        return f"Bearer {token}"
