"""The operator's metrics: each reconcile is counted once, by how it ended."""

from __future__ import annotations

import asyncio

import kopf
import pytest
from prometheus_client import REGISTRY

from vllm_operator.reconcile.timing import reconcile_timer


def count(kind: str, result: str) -> float:
    labels = {"kind": kind, "result": result}
    return REGISTRY.get_sample_value("vllm_operator_reconciles_total", labels) or 0.0


@pytest.mark.parametrize(
    ("error", "result"),
    [
        (None, "ok"),
        (kopf.TemporaryError("wait", delay=1), "retry"),
        (kopf.PermanentError("bad spec"), "invalid"),
        (RuntimeError("bug"), "error"),
    ],
)
def test_reconcile_results(error: Exception | None, result: str):
    kind = f"Test{result}"
    before = REGISTRY.get_sample_value(
        "vllm_operator_reconcile_duration_seconds_count", {"kind": kind}
    )

    async def reconcile() -> None:
        async with reconcile_timer(kind):
            if error is not None:
                raise error

    if error is None:
        asyncio.run(reconcile())
    else:
        with pytest.raises(type(error)):
            asyncio.run(reconcile())
    assert count(kind, result) == 1
    assert sum(count(kind, r) for r in ("ok", "retry", "invalid", "error")) == 1
    after = REGISTRY.get_sample_value(
        "vllm_operator_reconcile_duration_seconds_count", {"kind": kind}
    )
    assert (before or 0) + 1 == after
