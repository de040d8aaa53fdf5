"""Consumers of work queues and listeners of topics, as the broker's watchdog sees them: each
can tell whether RabbitMQ still delivers to it and re-attach itself if not. They reach RabbitMQ
through a ConsumerHub, never through the broker."""

import asyncio
import logging
from typing import Self, cast

import aiormq
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel

from shared.broker import Handler, TopicHandler
from shared.broker.policy import ACK, DEAD_LETTER, REQUEUE, Verdict, run_handler, run_topic_handler
from shared.broker.queues import QueueSpec
from shared.broker.rabbitmq.errors import is_driver_error, translated_errors
from shared.broker.rabbitmq.hub import Attachment, ConsumerHub, Listening
from shared.deadlines import Deadlines

# The adapter logs under one name, as it did when it was one module.
log = logging.getLogger(__package__)


class AmqpDelivery:
    __slots__ = ("_deadlines", "_message", "settled")

    def __init__(self, message: AbstractIncomingMessage, deadlines: Deadlines) -> None:
        self._message = message
        self._deadlines = deadlines
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
            await settle(self._message, ACK, self._deadlines)

    async def reject(self, *, requeue: bool) -> None:
        if self.settled:
            return
        self.settled = True
        with translated_errors():
            await settle(self._message, REQUEUE if requeue else DEAD_LETTER, self._deadlines)


class AmqpConsumer:
    def __init__(self, hub: ConsumerHub, spec: QueueSpec, handler: Handler, prefetch: int) -> None:
        self._hub = hub
        self._spec = spec
        self._handler = handler
        self._prefetch = prefetch
        # RabbitMQ bounds unacked messages; this bounds running handlers, which differs only
        # when a handler settles early and keeps working. The port promises the latter.
        self._running = asyncio.Semaphore(prefetch)
        # None while lost and not yet re-attached.
        self._attachment: Attachment | None = None
        self.cancelled = False

    @classmethod
    async def start(
        cls, hub: ConsumerHub, spec: QueueSpec, handler: Handler, prefetch: int
    ) -> Self:
        consumer = cls(hub, spec, handler, prefetch)
        # Its callback is the consumer's own method, so the consumer exists before RabbitMQ
        # knows it; no delivery can reach it before `attach` returns.
        consumer._attachment = await hub.attach(spec, consumer.on_message, prefetch)
        hub.track(consumer)
        return consumer

    async def is_attached(self) -> bool:
        """Whether RabbitMQ is delivering to this consumer on an open channel right now."""
        attachment = self._attachment
        return attachment is not None and await consuming(attachment.slot.channel, attachment.tag)

    async def reattach(self) -> None:
        """Consume again on a healthy channel, forgetting the lost registration."""
        lost, self._attachment = self._attachment, None
        if lost is not None:
            # Forgotten first, so a late aio-pika restore cannot bring back a duplicate.
            await self._hub.detach(lost)
        attachment = await self._hub.attach(self._spec, self.on_message, self._prefetch)
        if self.cancelled:  # cancelled meanwhile: undo
            await self._hub.detach(attachment)
            return
        self._attachment = attachment
        log.warning("re-attached a lost consumer of %s", self._spec.name)

    def on_message(self, message: AbstractIncomingMessage) -> None:
        # The handler runs in a task of ours, not aio-pika's (cancelled when the channel
        # closes), so that it finishes its (idempotent) work and shutdown can wait for it; its
        # settle then fails harmlessly and RabbitMQ redelivers the message. Not a coroutine:
        # aio-pika then calls it without a task of its own per delivery.
        self._hub.handlers.spawn(self._run(message))

    async def _run(self, message: AbstractIncomingMessage) -> None:
        async with self._running:
            if self.cancelled:
                # Delivered after cancel() but never handed over: back to its place.
                await settle_quietly(message, REQUEUE, self._hub.settles)
                return
            delivery = AmqpDelivery(message, self._hub.settles)
            verdict = await run_handler(self._handler, delivery, self._spec.name)
            if verdict is not None:
                await settle_quietly(message, verdict, self._hub.settles)

    async def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        self._hub.forget(self)
        if self._attachment is not None:
            await self._hub.detach(self._attachment)


async def consuming(channel: AbstractRobustChannel, tag: str) -> bool:
    """Whether `tag` is a live consumer on `channel` as the client sees it."""
    if channel.is_closed:
        return False
    try:
        underlay = await channel.get_underlay_channel()
    except Exception as e:
        if not is_driver_error(e):
            raise
        return False
    # aiormq's Channel keeps its live consumers by tag; the abstract type does not say so.
    return tag in underlay.consumers  # type: ignore[attr-defined]


async def settle(message: AbstractIncomingMessage, verdict: Verdict, deadlines: Deadlines) -> None:
    """Carry `verdict` out, or raise TimeoutError after the deadlines' limit.

    The frame is queued for aiormq's writer, not awaited until written (`wait=False`): nothing
    here needs to know when it left, and a wait per settle cost a future and a wake-up. Still
    bounded: the writer's queue is bounded, and a put into it on a channel lost in a RabbitMQ
    restart can wait forever (seen in the fault suite, when the ack awaited its write). It runs
    while its consumer holds a prefetch slot, and the consumer keeps its slots when the
    watchdog re-attaches it, so one such settle stopped a drone's deliveries for good."""
    # The channel the message came on (aio-pika raises if it closed): a delivery tag means
    # nothing on another.
    channel = cast(aiormq.Channel, message.channel)
    tag = message.delivery_tag
    assert tag is not None, "work queues are consumed with manual acks"
    if verdict is ACK:
        await deadlines.run(channel.basic_ack(tag, wait=False))
    else:
        # RabbitMQ puts a requeued message back at its original position where it can.
        await deadlines.run(channel.basic_reject(tag, requeue=verdict is REQUEUE, wait=False))


async def settle_quietly(
    message: AbstractIncomingMessage, verdict: Verdict, deadlines: Deadlines
) -> None:
    """If the channel is gone RabbitMQ requeues the message by itself, and the consumers are
    idempotent, so a failure here is only logged."""
    try:
        await settle(message, verdict, deadlines)
    except TimeoutError:
        # Unlike a closed channel, not routine: worth seeing at the default log level.
        log.warning(
            "gave up settling a message after %s s (RabbitMQ will redeliver it)",
            deadlines.limit_s,
        )
    except Exception as e:
        if not is_driver_error(e):
            raise
        log.info("could not settle a message (RabbitMQ will redeliver it): %r", e)


class TopicSubscription:
    def __init__(self, hub: ConsumerHub, topic: str, handler: TopicHandler) -> None:
        self._hub = hub
        self._topic = topic
        self._handler = handler
        # None while lost and not yet re-attached.
        self._listening: Listening | None = None
        self.cancelled = False

    @classmethod
    async def start(cls, hub: ConsumerHub, topic: str, handler: TopicHandler) -> Self:
        subscription = cls(hub, topic, handler)
        subscription._listening = await hub.listen(topic, subscription.on_message)
        hub.track(subscription)
        return subscription

    async def is_attached(self) -> bool:
        listening = self._listening
        return listening is not None and await consuming(listening.channel, listening.tag)

    async def reattach(self) -> None:
        """Listen again through a new queue: the exclusive one died with its connection."""
        lost, self._listening = self._listening, None
        if lost is not None:
            await self._hub.unlisten(lost)
        self._listening = await self._hub.listen(self._topic, self.on_message)
        log.warning("re-attached a lost listener of %s", self._topic)

    def on_message(self, message: AbstractIncomingMessage) -> None:
        if not self.cancelled:
            self._hub.handlers.spawn(run_topic_handler(self._handler, message.body, self._topic))

    async def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        self._hub.forget(self)
        if self._listening is not None:
            await self._hub.unlisten(self._listening)
