"""Concurrent calls of one store method, joined into one MongoDB round trip.

A consumer runs up to `prefetch` handlers at once, and each would pay its own round trip: on
the 2-core bench a PyMongo call costs its caller 0.3-0.45 ms of Python and mongod a command's
overhead. A `Batcher` sends the first call at once, alone; calls that arrive while a write is
in flight wait for it and then go together in the next one. So a lone call is not delayed and
a loaded one shares its round trip, as `gateway.connections.NotifiedLog` does for
mark_notified. Each caller gets its own outcome, or the exception of its batch.
"""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")

# Bounds what one write holds, so that one slow batch does not grow without limit.
MAX_BATCH = 256


class Batcher(Generic[Item, Outcome]):
    """`await batcher.submit(item)` runs `write(items)`, which returns one outcome per item in
    their order, with whatever other items were submitted meanwhile."""

    def __init__(self, write: Callable[[Sequence[Item]], Awaitable[Sequence[Outcome]]]) -> None:
        self._write = write
        self._waiting: list[tuple[Item, asyncio.Future[Outcome]]] = []
        self._writer: asyncio.Task[None] | None = None

    def submit(self, item: Item) -> "asyncio.Future[Outcome]":
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._run())
        return future

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[:MAX_BATCH]
                del self._waiting[:MAX_BATCH]
                await self._settle(batch)
        finally:
            self._writer = None

    async def _settle(self, batch: list[tuple[Item, "asyncio.Future[Outcome]"]]) -> None:
        try:
            outcomes = await self._write([item for item, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled (shutdown): no caller may wait forever
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if not future.done():  # its caller was cancelled
                future.set_result(outcome)
