"""Consumers of work queues and listeners of topics, as the broker's watchdog sees them: each
can tell whether RabbitMQ still delivers to it and re-attach itself if not."""

import asyncio
import logging
from contextlib import suppress
from typing import TYPE_CHECKING

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustQueue

from shared.broker import TRANSIENT_RETRY_DELAY_S, Handler, TopicHandler
from shared.broker.rabbitmq.channels import ChannelSlot
from shared.broker.rabbitmq.errors import DRIVER_ERRORS, translated_errors
from shared.errors import TRANSIENT_ERRORS
from shared.protocol import QueueSpec

if TYPE_CHECKING:
    from shared.broker.rabbitmq.broker import RabbitMQBroker

# The adapter logs under one name, as it did when it was one module.
log = logging.getLogger(__package__)


class AmqpDelivery:
    __slots__ = ("_message", "settled")

    def __init__(self, message: AbstractIncomingMessage) -> None:
        self._message = message
        self.settled = False

    @property
    def body(self) -> bytes:
        return self._message.body

    @property
    def redelivered(self) -> bool:
        return bool(self._message.redelivered)

    async def ack(self) -> None:
        if self.settled:  # a second ack would be an unknown delivery tag, closing the channel
            return
        self.settled = True
        with translated_errors():
            await self._message.ack()

    async def reject(self, *, requeue: bool) -> None:
        if self.settled:
            return
        self.settled = True
        with translated_errors():
            # RabbitMQ puts a requeued message back at its original position where it can.
            await self._message.reject(requeue=requeue)


class AmqpConsumer:
    def __init__(
        self,
        broker: "RabbitMQBroker",
        spec: QueueSpec,
        slot: ChannelSlot,
        queue: AbstractRobustQueue,
        handler: Handler,
        prefetch: int,
    ) -> None:
        self._broker = broker
        self._queue_spec = spec
        self._prefetch = prefetch
        self._slot = slot
        self._queue = queue
        self._handler = handler
        # RabbitMQ bounds unacked messages; this bounds running handlers, which differs only
        # when a handler settles early and keeps working. The port promises the latter.
        self._running = asyncio.Semaphore(prefetch)
        self.tag: str | None = None
        self.cancelled = False

    async def is_attached(self) -> bool:
        """Whether RabbitMQ is delivering to this consumer on an open channel right now."""
        return await consuming(self._slot.channel, self.tag)

    async def reattach(self) -> None:
        """Consume again on a healthy channel, forgetting the lost registration."""
        old_slot, old_queue, old_tag = self._slot, self._queue, self.tag
        with suppress(*DRIVER_ERRORS, TimeoutError):
            if old_tag is not None:
                # Forgotten first, so a late aio-pika restore cannot bring back a duplicate.
                async with asyncio.timeout(self._broker._timeout_s):
                    await old_queue.cancel(old_tag)
        old_slot.consumers -= 1
        async with asyncio.timeout(self._broker._timeout_s):
            slot, queue, tag = await self._broker._attach(
                self._queue_spec, self.on_message, self._prefetch
            )
        if self.cancelled:  # cancelled meanwhile: undo
            slot.consumers -= 1
            with suppress(*DRIVER_ERRORS):
                await queue.cancel(tag)
            return
        self._slot, self._queue, self.tag = slot, queue, tag
        log.warning("re-attached a lost consumer of %s", queue.name)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        # aio-pika calls this in a task that is cancelled when the channel closes. The handler
        # gets a task of ours so that it finishes its (idempotent) work and shutdown can wait
        # for it; its settle then fails harmlessly and RabbitMQ redelivers the message.
        self._broker._spawn(self._run(message))

    async def _run(self, message: AbstractIncomingMessage) -> None:
        async with self._running:
            if self.cancelled:
                # Delivered after cancel() but never handed over: back to its place.
                await settle_quietly(message, requeue=True)
                return
            delivery = AmqpDelivery(message)
            try:
                await self._handler(delivery)
            except TRANSIENT_ERRORS as e:
                if not delivery.settled:
                    log.warning("requeueing a message of %s: %r", self._queue.name, e)
                    delivery.settled = True
                    await asyncio.sleep(TRANSIENT_RETRY_DELAY_S)
                    await settle_quietly(message, requeue=True)
            except Exception:
                log.exception("handler failed; dead-lettering its message of %s", self._queue.name)
                if not delivery.settled:
                    delivery.settled = True
                    await settle_quietly(message, requeue=False)
            else:
                if not delivery.settled:
                    delivery.settled = True
                    await settle_quietly(message, requeue=None)

    async def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        self._broker._consumers.discard(self)
        self._slot.consumers -= 1
        if self.tag is None:
            return
        try:
            # RobustQueue.cancel forgets the consumer before its RPC, so even if the RPC fails
            # (connection down) recovery does not bring the consumer back.
            async with asyncio.timeout(self._broker._timeout_s):
                await self._queue.cancel(self.tag)
        except DRIVER_ERRORS as e:
            log.debug("cancelling consumer %s of %s: %r", self.tag, self._queue.name, e)


async def consuming(channel: AbstractRobustChannel, tag: str | None) -> bool:
    """Whether `tag` is a live consumer on `channel` as the client sees it."""
    if tag is None or channel.is_closed:
        return False
    try:
        underlay = await channel.get_underlay_channel()
    except DRIVER_ERRORS:
        return False
    # aiormq's Channel keeps its live consumers by tag; the abstract type does not say so.
    return tag in underlay.consumers  # type: ignore[attr-defined]


async def settle_quietly(message: AbstractIncomingMessage, *, requeue: bool | None) -> None:
    """Ack (requeue=None) or reject. If the channel is gone RabbitMQ requeues the message by
    itself, and the consumers are idempotent, so a failure here is only logged."""
    try:
        if requeue is None:
            await message.ack()
        else:
            await message.reject(requeue=requeue)
    except DRIVER_ERRORS as e:
        log.info("could not settle a message (RabbitMQ will redeliver it): %r", e)


class TopicSubscription:
    def __init__(
        self,
        broker: "RabbitMQBroker",
        topic: str,
        channel: AbstractRobustChannel,
        queue: AbstractRobustQueue,
        handler: TopicHandler,
    ) -> None:
        self._broker = broker
        self._topic = topic
        self._channel = channel
        self._queue = queue
        self._handler = handler
        self.tag: str | None = None
        self.cancelled = False

    async def is_attached(self) -> bool:
        return await consuming(self._channel, self.tag)

    async def reattach(self) -> None:
        """Listen again through a new queue: the exclusive one died with its connection."""
        with suppress(*DRIVER_ERRORS, TimeoutError):
            async with asyncio.timeout(self._broker._timeout_s):
                if self.tag is not None:
                    await self._queue.cancel(self.tag)
                await self._channel.queue_delete(self._queue.name)
        async with asyncio.timeout(self._broker._timeout_s):
            channel, queue, tag = await self._broker._listen(self._topic, self.on_message)
        self._channel, self._queue, self.tag = channel, queue, tag
        log.warning("re-attached a lost listener of %s", self._topic)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        if not self.cancelled:
            self._broker._spawn(self._run(message.body))

    async def _run(self, body: bytes) -> None:
        try:
            await self._handler(body)
        except Exception:
            log.exception("handler of topic queue %s failed", self._queue.name)

    async def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        self._broker._topic_subscriptions.discard(self)
        try:
            async with asyncio.timeout(self._broker._timeout_s):
                if self.tag is not None:
                    await self._queue.cancel(self.tag)
                # Also makes the robust channel forget the queue, so recovery won't redeclare it.
                await self._channel.queue_delete(self._queue.name)
        except DRIVER_ERRORS as e:
            log.debug("cancelling topic queue %s: %r", self._queue.name, e)
