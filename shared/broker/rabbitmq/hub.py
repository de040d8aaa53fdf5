"""What consumers and topic listeners get instead of their broker (as faststream hands its
subscribers a config object): the channels to consume on, the bound on every wait, the tasks
their handlers run in, and the register of live ones that the broker's watchdog and shutdown
walk."""

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import NamedTuple, Protocol

from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustQueue,
)

from shared.broker.policy import HandlerTasks
from shared.broker.queues import QueueSpec
from shared.broker.rabbitmq.channels import ChannelPools, ChannelSlot
from shared.broker.rabbitmq.errors import is_driver_error
from shared.broker.rabbitmq.topology import Topology
from shared.deadlines import Deadlines

# The adapter logs under one name, as it did when it was one module.
log = logging.getLogger(__package__)

Callback = Callable[[AbstractIncomingMessage], None]


class Attachment(NamedTuple):
    """One registration of a work-queue consumer with RabbitMQ."""

    slot: ChannelSlot
    queue: AbstractRobustQueue
    tag: str


class Listening(NamedTuple):
    """One registration of a topic listener: its own exclusive queue, bound to the topic."""

    channel: AbstractRobustChannel
    queue: AbstractRobustQueue
    tag: str


class Watched(Protocol):
    """A consumer or listener as the watchdog and shutdown see it."""

    @property
    def cancelled(self) -> bool: ...

    async def is_attached(self) -> bool: ...

    async def reattach(self) -> None: ...

    async def cancel(self) -> None: ...


class ConsumerHub:
    """Every wait on RabbitMQ here is bounded by `timeout_s` and raises the driver's errors
    (or TimeoutError): the broker translates them for its callers, the watchdog retries."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        channels: ChannelPools,
        topology: Topology,
        *,
        timeout_s: float,
        listener_expiry_s: float,
    ) -> None:
        self._connection = connection
        self._channels = channels
        self._topology = topology
        self._timeout_s = timeout_s
        self._listener_expiry_ms = max(1, round(listener_expiry_s * 1000))
        self._live: set[Watched] = set()
        self.handlers = HandlerTasks()
        # Bounds every settle: one timer for all, as they share the limit.
        self.settles = Deadlines(timeout_s)

    def live(self) -> tuple[Watched, ...]:
        return tuple(self._live)

    def track(self, item: Watched) -> None:
        self._live.add(item)

    def forget(self, item: Watched) -> None:
        self._live.discard(item)

    async def attach(self, spec: QueueSpec, callback: Callback, prefetch: int) -> Attachment:
        async with asyncio.timeout(self._timeout_s):
            slot = await self._channels.acquire(self._connection, prefetch)
            try:
                queue = await slot.declare_queue(spec.name, self._topology.arguments(spec))
                # Manual acks: priority order only holds with manual acks and a small
                # prefetch, and a message must survive a consumer that dies mid-way.
                tag = await queue.consume(callback, no_ack=False)
            except BaseException:
                self._channels.release(slot)
                raise
        return Attachment(slot, queue, tag)

    async def detach(self, attachment: Attachment) -> None:
        """Give up the channel slot, then cancel; a failed cancel is only logged."""
        self._channels.release(attachment.slot)
        try:
            # RobustQueue.cancel forgets the consumer before its RPC, so even if the RPC fails
            # (connection down) recovery does not bring the consumer back.
            async with asyncio.timeout(self._timeout_s):
                await attachment.queue.cancel(attachment.tag)
        except Exception as e:
            if not is_driver_error(e):
                raise
            log.debug("cancelling consumer %s of %s: %r", attachment.tag, attachment.queue.name, e)

    async def listen(self, topic: str, callback: Callback) -> Listening:
        async with asyncio.timeout(self._timeout_s):
            channel = await self._channels.topic_channel(self._connection)
            exchange = await self._topology.declare_topic(channel, topic, robust=True)
            # Named by us, not by the server: the robust channel redeclares it under the same
            # name after a reconnect (exclusive queues die with their connection).
            # x-expires: a late restore of a channel given up on redeclares its queues, and a
            # listener queue redeclared without its (forgotten) consumer took every broadcast
            # until the connection closed. A listening queue is never unused, so never expires.
            queue = await channel.declare_queue(
                f"{topic}.listener.{uuid.uuid4().hex}",
                exclusive=True,
                auto_delete=True,
                arguments={"x-expires": self._listener_expiry_ms},
            )
            await queue.bind(exchange, routing_key="")
            # no_ack: broadcasts are fire-and-forget; a lost one is not redelivered anyway.
            tag = await queue.consume(callback, no_ack=True)
        return Listening(channel, queue, tag)

    async def unlisten(self, listening: Listening) -> None:
        """Stop and delete the listener's queue; a failure is only logged."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await listening.queue.cancel(listening.tag)
                # Also makes the robust channel forget the queue, so recovery won't redeclare it.
                await listening.channel.queue_delete(listening.queue.name)
        except Exception as e:
            if not is_driver_error(e):
                raise
            log.debug("cancelling topic queue %s: %r", listening.queue.name, e)
