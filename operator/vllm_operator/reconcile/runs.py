"""Per-object serialization for reconciles, and sharing of reconciles that would repeat.

A VLLMDeployment's handlers, its children's events and the drift loop may fire together: one
reconcile per object runs at a time (`locked`). LoRA reconciles are level-based (each reads all
state afresh), so the callers that arrive while one waits for its turn can share that one run
(`shared`): a burst of pod events during a rollout costs two runs, not one per event.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

T = TypeVar("T")


class KeyedRuns:
    def __init__(self) -> None:
        self._locks: dict[Hashable, asyncio.Lock] = {}
        self._users: Counter[Hashable] = Counter()
        self._waiting: dict[Hashable, asyncio.Future[Any]] = {}

    @asynccontextmanager
    async def locked(self, key: Hashable) -> AsyncIterator[None]:
        """One holder per key at a time; the lock is dropped once nobody holds or awaits it."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] += 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]

    async def shared(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> T:
        """`work()` under the key's lock. Callers arriving while a run waits for the lock get
        that run's result (it starts after they arrived, so it sees what they came for);
        callers arriving once it started wait for the next one."""
        waiting = self._waiting.get(key)
        if waiting is not None:
            return await asyncio.shield(waiting)
        waiting = asyncio.get_running_loop().create_future()
        waiting.add_done_callback(_retrieve)
        self._waiting[key] = waiting
        try:
            async with self.locked(key):
                del self._waiting[key]
                result = await work()
        except BaseException as e:
            if self._waiting.get(key) is waiting:  # cancelled while waiting for the lock
                del self._waiting[key]
            if waiting.done():
                pass
            elif isinstance(e, Exception):
                waiting.set_exception(e)  # the callers that joined fail alike
            else:
                waiting.cancel()
            raise
        waiting.set_result(result)
        return result


def _retrieve(future: asyncio.Future[Any]) -> None:
    """A failed run nobody joined: its exception went to its own caller already."""
    if not future.cancelled():
        future.exception()


CONCURRENCY = 16  # server calls in flight per reconcile


async def bounded(calls: Sequence[Awaitable[T]], limit: int = CONCURRENCY) -> list[T]:
    """The results of `calls`, at most `limit` of them in flight at once."""
    semaphore = asyncio.Semaphore(limit)

    async def one(call: Awaitable[T]) -> T:
        async with semaphore:
            return await call

    return await asyncio.gather(*(one(c) for c in calls))
