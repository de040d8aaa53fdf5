"""What every adapter does around a handler, written once: how a delivery its handler left
unsettled is settled, and the tasks handlers run in, which shutdown drains.

The policy decides and the adapter carries the verdict out in its own way: RabbitMQ sends a
frame, the in-memory broker moves a message between its heaps without an await.
"""

import asyncio
import enum
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from shared.broker import TRANSIENT_RETRY_DELAY_S, Delivery, Handler, TopicHandler
from shared.errors import TRANSIENT_ERRORS

log = logging.getLogger(__name__)


class Verdict(enum.Enum):
    """How the adapter must settle a delivery on its handler's behalf."""

    ACK = enum.auto()
    REQUEUE = enum.auto()
    DEAD_LETTER = enum.auto()


# Looked up on its class, an Enum member costs ~60 ns on Python 3.11: too much once a message.
ACK, REQUEUE, DEAD_LETTER = Verdict.ACK, Verdict.REQUEUE, Verdict.DEAD_LETTER


class Settled(Delivery, Protocol):
    """A delivery that knows whether it was settled; the policy claims it by setting it."""

    settled: bool


async def run_handler(handler: Handler, delivery: Settled, queue_name: str) -> Verdict | None:
    """Run `handler` on `delivery` and return how to settle it, or None when the handler did.

    A transient error (an outage) holds the prefetch slot for TRANSIENT_RETRY_DELAY_S before
    the requeue, so that an outage slows consumption instead of spinning through redeliveries.
    The delivery is claimed before that wait: a late settle from elsewhere is then a no-op,
    where RabbitMQ would close the channel on the second settle of one delivery tag."""
    try:
        await handler(delivery)
    except TRANSIENT_ERRORS as e:
        if delivery.settled:
            return None
        delivery.settled = True
        log.warning("requeueing a message of %s: %r", queue_name, e)
        await asyncio.sleep(TRANSIENT_RETRY_DELAY_S)
        return REQUEUE
    except Exception:
        log.exception("handler failed; dead-lettering a message of %s", queue_name)
        if delivery.settled:
            return None
        delivery.settled = True
        return DEAD_LETTER
    if delivery.settled:
        return None
    delivery.settled = True
    return ACK


async def run_topic_handler(handler: TopicHandler, body: bytes, topic: str) -> None:
    """Topics are fire-and-forget: a failed handler is logged and its broadcast is gone."""
    try:
        await handler(body)
    except Exception:
        log.exception("handler of topic %s failed", topic)


class HandlerTasks:
    """The tasks an adapter runs handlers in, kept so that shutdown can let them finish."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, deadline: float) -> None:
        """Wait until the loop's clock reaches `deadline` for the handlers to finish, then
        cancel those still running. Waits in rounds: a finishing handler may spawn more."""
        loop = asyncio.get_running_loop()
        while self._tasks and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait(tuple(self._tasks), timeout=remaining)
        if self._tasks:
            log.warning("cancelling %d handlers still running at shutdown", len(self._tasks))
            pending = tuple(self._tasks)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
