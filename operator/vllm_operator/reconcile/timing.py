"""How each reconcile ended, by Kopf's terms, in the operator's metrics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import kopf

from ..metrics import RECONCILE_SECONDS, RECONCILES


@asynccontextmanager
async def reconcile_timer(kind: str) -> AsyncIterator[None]:
    """Counts and times one reconcile of `kind`, by how it ended: ok, retry (TemporaryError),
    invalid (PermanentError) or error (anything else)."""
    start = time.perf_counter()
    result = "error"
    try:
        yield
        result = "ok"
    except kopf.TemporaryError:
        result = "retry"
        raise
    except kopf.PermanentError:
        result = "invalid"
        raise
    finally:
        RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - start)
        RECONCILES.labels(kind, result).inc()
