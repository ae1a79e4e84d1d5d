"""The operator's admin key for tests: one Ed25519 key per test process, in a PEM file as the
chart mounts it (`VLLM_OPERATOR_ADMIN_KEY_FILE`), so that test doubles and real servers can be
given its public half, as the operator's pods are."""

from __future__ import annotations

import base64
import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KEY = Ed25519PrivateKey.generate()
PUBLIC_KEY = base64.b64encode(
    KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
).decode()  # as `vllm-ext-serve --admin-token-public-key` takes it


@functools.cache
def key_file() -> Path:
    """The key as PKCS#8 PEM (what Helm's `genPrivateKey "ed25519"` writes), in a file of this
    process."""
    path = Path(tempfile.mkdtemp(prefix="vllm-admin-key-")) / "private-key.pem"
    pem = KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    return path


@contextlib.contextmanager
def operator_uses_test_key() -> Iterator[None]:
    """The in-process operator started inside signs with `KEY` (restored after)."""
    from vllm_operator.config import ADMIN_KEY_FILE_ENV

    before = os.environ.get(ADMIN_KEY_FILE_ENV)
    os.environ[ADMIN_KEY_FILE_ENV] = str(key_file())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ADMIN_KEY_FILE_ENV, None)
        else:
            os.environ[ADMIN_KEY_FILE_ENV] = before
