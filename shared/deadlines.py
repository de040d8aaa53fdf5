"""One time limit for many awaits, kept by one timer.

`async with asyncio.timeout(s)` arms and cancels a loop timer per call: ~10 µs under uvloop on
the bench box, paid on every task's path (the gateway's intake publish has a deadline, and so
has every settle of a RabbitMQ delivery). Every call here has the same limit, so their
deadlines come in the order the calls start: a queue of them and one timer, set for the
oldest, do the same for ~1 µs a call.

A call past its limit is cancelled, and the CancelledError becomes TimeoutError, as with
asyncio.timeout (a cancellation from elsewhere stays a cancellation).
"""

import asyncio
from collections import deque
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


class _Call:
    __slots__ = ("deadline", "expired", "task")

    def __init__(self, deadline: float, task: "asyncio.Task[Any] | None") -> None:
        self.deadline = deadline
        self.task = task  # None once the call is over
        self.expired = False


class Deadlines:
    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self._calls: deque[_Call] = deque()
        self._timer: asyncio.TimerHandle | None = None

    async def run(self, awaitable: Awaitable[T]) -> T:
        """Await `awaitable`; TimeoutError if it takes longer than `limit_s`."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadlines.run needs a running task")
        loop = asyncio.get_running_loop()
        calls = self._calls
        while calls and calls[0].task is None:
            calls.popleft()  # calls end about in the order they start: the queue stays short
        call = _Call(loop.time() + self.limit_s, task)
        calls.append(call)
        if self._timer is None:
            self._timer = loop.call_at(call.deadline, self._expire)
        cancelling = task.cancelling()
        try:
            return await awaitable
        except asyncio.CancelledError:
            if call.expired and task.uncancel() <= cancelling:
                raise TimeoutError from None
            raise
        finally:
            call.task = None

    def _expire(self) -> None:
        self._timer = None
        calls = self._calls
        loop = asyncio.get_running_loop()
        now = loop.time()
        while calls:
            call = calls[0]
            if call.task is None:
                calls.popleft()
                continue
            if call.deadline > now:
                self._timer = loop.call_at(call.deadline, self._expire)
                return
            calls.popleft()
            call.expired = True
            call.task.cancel()
            call.task = None
