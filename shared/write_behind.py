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

    def add(self, item: str) -> None:
        self._pending.append(item)
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
                try:
                    await self._write_batch(batch)
                except TRANSIENT_ERRORS:
                    log.warning("could not record %d %s", len(batch), self._what)
        finally:
            self._writer = None

    async def flush(self) -> None:
        """Until every id added so far was written (or given up)."""
        if self._writer is not None:
            self._hurry.set()
            await self._writer
