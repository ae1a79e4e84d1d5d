"""One reconcile per object at a time; callers that arrive while one waits share it."""

from __future__ import annotations

import asyncio

import pytest

from vllm_operator.reconcile.runs import KeyedRuns

pytestmark = pytest.mark.asyncio


class Work:
    """A level-based reconcile stand-in: reads the state when it starts, holds for a while."""

    def __init__(self) -> None:
        self.state = 0
        self.runs: list[int] = []
        self.release = asyncio.Event()

    async def __call__(self) -> int:
        seen = self.state
        self.runs.append(seen)
        await self.release.wait()
        return seen


async def test_a_burst_costs_two_runs_and_every_caller_sees_its_change():
    runs, work = KeyedRuns(), Work()
    first = asyncio.create_task(runs.shared("k", work))
    await asyncio.sleep(0)  # the first run started (state 0)
    callers = []
    for _ in range(10):  # ten events during that run, each changing the state
        work.state += 1
        callers.append(asyncio.create_task(runs.shared("k", work)))
        await asyncio.sleep(0)
    work.release.set()
    assert await first == 0
    assert await asyncio.gather(*callers) == [10] * 10  # one trailing run, after every change
    assert work.runs == [0, 10]
    assert runs._locks == {} and runs._waiting == {}  # nothing kept for the key


async def test_keys_run_independently_and_failures_reach_every_joined_caller():
    runs = KeyedRuns()
    gate = asyncio.Event()

    async def fail() -> None:
        await gate.wait()
        raise RuntimeError("server unreachable")

    async def ok() -> str:
        return "other key"

    busy = asyncio.create_task(runs.shared("k", fail))
    await asyncio.sleep(0)
    joined = [asyncio.create_task(runs.shared("k", fail)) for _ in range(3)]
    await asyncio.sleep(0)
    assert await runs.shared("other", ok) == "other key"  # not held up by "k"
    gate.set()
    for task in [busy, *joined]:
        with pytest.raises(RuntimeError, match="server unreachable"):
            await task


async def test_a_caller_cancelled_while_waiting_leaves_no_stale_run():
    runs, work = KeyedRuns(), Work()
    holder = asyncio.create_task(runs.shared("k", work))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(runs.shared("k", work))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    work.release.set()
    await holder
    work.state = 5
    assert await runs.shared("k", work) == 5  # a fresh run, not the cancelled one
    assert runs._locks == {} and runs._waiting == {}


async def test_locked_serializes_and_forgets_the_key():
    runs, order = KeyedRuns(), []

    async def hold(name: str) -> None:
        async with runs.locked("k"):
            order.append(f"{name} in")
            await asyncio.sleep(0.01)
            order.append(f"{name} out")

    await asyncio.gather(hold("a"), hold("b"))
    assert order == ["a in", "a out", "b in", "b out"]
    assert runs._locks == {}
