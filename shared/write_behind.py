"""Store writes that nobody on a task's path waits for, many ids per call."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from shared.errors import TRANSIENT_ERRORS

log = logging.getLogger(__name__)


class WriteBehind:
    """Calls `write` with the ids added since its last call: one call in flight at a time, and
    ids added meanwhile go in the next one, so a loaded process makes few, large writes. A call
    that fails for a transient reason (the store is away) is logged and its ids dropped: use it
    only for writes whose loss costs a repeat (a sweep's, a recovery's), never a task."""

    def __init__(
        self,
        write: Callable[[Sequence[str]], Awaitable[None]],
        what: str,
        *,
        delay_s: float = 0.0,
        max_pending: int = 10_000,
    ) -> None:
        """`delay_s`: how long a write waits after its first id for others to go with it,
        unless `max_pending` ids are waiting or `flush` is called."""
        self._write_batch = write
        self._what = what
        self._delay_s = delay_s
        self._max_pending = max_pending
        self._pending: list[str] = []
        self._writer: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()
        # Counted so that flush waits for the ids added before it only: under steady load
        # the writer always has more, and waiting for it to idle would wait for the load.
        self._added = 0
        self._settled = 0  # written, given up or discarded
        self._flushes: list[tuple[int, asyncio.Future[None]]] = []

    def add(self, item: str) -> None:
        self._pending.append(item)
        self._added += 1
        if len(self._pending) >= self._max_pending:
            self._hurry.set()
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        try:
            while self._pending:
                if self._delay_s and not self._hurry.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._hurry.wait(), self._delay_s)
                self._hurry.clear()
                batch, self._pending = self._pending, []
                if not batch:
                    break  # discarded while waiting
                try:
                    await self._write_batch(batch)
                except TRANSIENT_ERRORS:
                    log.warning("could not record %d %s", len(batch), self._what)
                finally:
                    self._settle(len(batch))
        finally:
            self._writer = None

    def _settle(self, count: int) -> None:
        self._settled += count
        waiting = []
        for target, done in self._flushes:
            if self._settled >= target:
                if not done.done():
                    done.set_result(None)
            else:
                waiting.append((target, done))
        self._flushes = waiting

    async def flush(self) -> None:
        """Until every id added before this call was written (or given up)."""
        if self._settled >= self._added:
            return
        done = asyncio.get_running_loop().create_future()
        self._flushes.append((self._added, done))
        self._hurry.set()
        if self._writer is None:  # the last one ended on an error that was not the store's
            self._writer = asyncio.create_task(self._write())
        await done

    async def discard(self) -> None:
        """Drop the ids not yet written, then wait for the write in flight, if any: what was
        added before this call is either written by then or never."""
        dropped, self._pending = self._pending, []
        self._settle(len(dropped))
        await self.flush()
