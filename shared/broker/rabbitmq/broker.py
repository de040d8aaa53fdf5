"""The RabbitMQBroker class: the connection's life cycle and the port's methods."""

import asyncio
import logging
from collections.abc import Sequence
from contextlib import suppress
from types import TracebackType
from typing import Self, cast

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection

from shared.broker import ConnectionListener, Handler, Outgoing, TopicHandler
from shared.broker.queues import Queues, QueueSpec
from shared.broker.rabbitmq.channels import ChannelPools
from shared.broker.rabbitmq.connection import RobustConnection
from shared.broker.rabbitmq.consumers import AmqpConsumer, TopicSubscription
from shared.broker.rabbitmq.errors import is_driver_error, translated_errors
from shared.broker.rabbitmq.hub import ConsumerHub
from shared.broker.rabbitmq.topology import Topology, wait_ready
from shared.errors import BrokerUnavailable

# The adapter logs under one name, as it did when it was one module.
log = logging.getLogger(__package__)

WATCH_INTERVAL_S = 2.0

PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)
TRANSIENT = int(aio_pika.DeliveryMode.NOT_PERSISTENT)


class RabbitMQBroker:
    """Durable queues on RabbitMQ. `timeout_s` bounds every wait on RabbitMQ (a declaration, a
    cancel), including a wait for the connection to come back; past it the call raises
    BrokerUnavailable. `publish_timeout_s` bounds a publish and its confirm the same way: a node
    under a memory or disk alarm takes the frames but confirms nothing until the alarm clears.
    A topic listener's queue left with no consumer is deleted by RabbitMQ after
    `orphan_listener_expiry_s`."""

    def __init__(
        self,
        url: str,
        queues: Queues,
        *,
        timeout_s: float = 10.0,
        publish_timeout_s: float = 10.0,
        reconnect_interval_s: float = 2.0,
        consumers_per_channel: int = 500,
        channels_per_pool: int = 16,
        shutdown_timeout_s: float = 5.0,
        write_window_s: float = 0.002,
        orphan_listener_expiry_s: float = 30.0,
    ) -> None:
        self._url = url
        self._queues = queues
        self._timeout_s = timeout_s
        self._publish_timeout_s = publish_timeout_s
        self._reconnect_interval_s = reconnect_interval_s
        self._shutdown_timeout_s = shutdown_timeout_s
        self._write_window_s = write_window_s
        self._orphan_listener_expiry_s = orphan_listener_expiry_s
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractRobustChannel | None = None
        self._channels = ChannelPools(
            consumers_per_channel=consumers_per_channel, channels_per_pool=channels_per_pool
        )
        self._topology = Topology(queues)
        self._hub: ConsumerHub | None = None  # once connected
        self._watchdog: asyncio.Task[None] | None = None
        self._publishing = 0  # publishes awaiting their confirm
        self._closed = False
        self.connection_listeners: list[ConnectionListener] = []
        """Told the reason when the connection is lost, None when it is back."""

    async def __aenter__(self) -> Self:
        with translated_errors():
            # What aio_pika.connect_robust does, with our connection class.
            connection = RobustConnection(
                aio_pika.connection.make_url(self._url),
                reconnect_interval=self._reconnect_interval_s,
                client_properties={"connection_name": f"droneflow {self._queues.prefix}"},
                write_window_s=self._write_window_s,
                # With confirms outstanding RabbitMQ is working for us: later frames may wait.
                busy=lambda: self._publishing > 1,
            )
            await connection.connect(timeout=self._timeout_s)
            self._connection = connection
            self._hub = ConsumerHub(
                connection,
                self._channels,
                self._topology,
                timeout_s=self._timeout_s,
                listener_expiry_s=self._orphan_listener_expiry_s,
            )
            try:
                # Publisher confirms: `publish` returns only once RabbitMQ has taken the
                # message. on_return_raises: a mandatory message no queue took is an error.
                self._publisher = await self._connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
                await self._topology.declare_dead_letters(self._publisher)
            except BaseException:
                await self._connection.close()
                raise
        # After a reconnect the node may be a fresh one: declare queues again on first use.
        self._connection.reconnect_callbacks.add(self._topology.forget)
        self._connection.close_callbacks.add(self._on_connection_lost)
        self._connection.reconnect_callbacks.add(self._on_reconnected)
        self._watchdog = asyncio.create_task(self._watch_consumers())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        if self._hub is not None:
            await self._drain(self._hub)
        if self._connection is not None:
            try:
                await self._connection.close()
            except Exception as e:
                if not is_driver_error(e):
                    raise
                log.debug("closing the RabbitMQ connection: %r", e)

    async def _drain(self, hub: ConsumerHub) -> None:
        deadline = asyncio.get_running_loop().time() + self._shutdown_timeout_s
        # Stop deliveries first, let running handlers settle, then close: closing a channel
        # would make RabbitMQ requeue what the handlers are about to ack. If RabbitMQ is away,
        # the cancels would wait for it; the shutdown budget bounds them.
        with suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await asyncio.gather(*(item.cancel() for item in hub.live()))
        await hub.handlers.drain(deadline)

    @property
    def durable(self) -> bool:
        return True

    async def publish(self, queue: QueueSpec, body: bytes, *, priority: int = 0) -> None:
        channel = self._require_publisher()
        with translated_errors():
            async with asyncio.timeout(self._publish_timeout_s):
                await self._publish(channel, queue, body, priority)

    async def publish_many(self, messages: Sequence[Outgoing]) -> None:
        channel = self._require_publisher()
        with translated_errors():
            async with asyncio.timeout(self._publish_timeout_s):
                for spec in {m.queue.name: m.queue for m in messages}.values():
                    await self._topology.ensure_declared(channel, spec)
                # Pipelined: every message goes out before the first confirm is awaited.
                results = await asyncio.gather(
                    *(self._publish(channel, m.queue, m.body, m.priority) for m in messages),
                    return_exceptions=True,
                )
        error = next((r for r in results if isinstance(r, BaseException)), None)
        if error is not None:
            with translated_errors():
                raise error

    async def consume(self, queue: QueueSpec, handler: Handler, *, prefetch: int) -> AmqpConsumer:
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        hub = self._require_hub()
        with translated_errors():
            return await AmqpConsumer.start(hub, queue, handler, prefetch)

    async def broadcast(self, topic: str, body: bytes) -> None:
        channel = self._require_publisher()
        with translated_errors():
            async with asyncio.timeout(self._publish_timeout_s):
                exchange = self._topology.topic_exchanges.get(topic)
                if exchange is None:
                    exchange = await self._topology.declare_topic(channel, topic, robust=False)
                    self._topology.topic_exchanges[topic] = exchange
                await wait_ready(channel)
                # Not mandatory and not persistent: a topic keeps nothing for absent listeners.
                await exchange.publish(aio_pika.Message(body), routing_key="", mandatory=False)

    async def subscribe(self, topic: str, handler: TopicHandler) -> TopicSubscription:
        hub = self._require_hub()
        with translated_errors():
            return await TopicSubscription.start(hub, topic, handler)

    async def queue_depth(self, queue: QueueSpec) -> int:
        channel = self._require_publisher()
        with translated_errors():
            async with asyncio.timeout(self._timeout_s):
                await wait_ready(channel)
                # A redeclaration with the same arguments is a no-op that reports the count of
                # ready messages; a passive one would close the channel if the queue is missing.
                declared = await channel.declare_queue(
                    queue.name,
                    durable=True,
                    arguments=self._topology.arguments(queue),
                    robust=False,
                )
        self._topology.declared.add(queue.name)
        count = declared.declaration_result.message_count
        return count if count is not None else 0

    # --- internals ----------------------------------------------------------------------

    def _on_connection_lost(self, _connection: object, exc: BaseException | None = None) -> None:
        if not self._closed:
            for listener in self.connection_listeners:
                listener(f"connection lost: {exc!r}")

    def _on_reconnected(self, _connection: object) -> None:
        for listener in self.connection_listeners:
            listener(None)

    def _require_publisher(self) -> AbstractRobustChannel:
        if self._closed or self._publisher is None:
            raise BrokerUnavailable("the RabbitMQ broker is not open")
        return self._publisher

    def _require_hub(self) -> ConsumerHub:
        self._require_publisher()
        assert self._hub is not None  # built with the connection, before the publisher
        return self._hub

    async def _watch_consumers(self) -> None:
        """aio-pika's robust channels restore consumers after a reconnect, but a channel whose
        close handler runs while the connection is going down can stay closed for good, and
        its consumers with it (seen when RabbitMQ restarts under load). So every
        WATCH_INTERVAL_S, once the connection is up, re-attach any consumer or listener that
        is found detached twice in a row (once may be a restore still in progress), and
        replace a dead publisher channel."""
        suspects: set[object] = set()
        while not self._closed:
            await asyncio.sleep(WATCH_INTERVAL_S)
            connection = self._connection
            if connection is None or connection.is_closed or connection.reconnecting:
                suspects.clear()
                continue
            try:
                await self._repair(suspects)
            except Exception as e:  # TimeoutError is an OSError, so a driver error too
                if not is_driver_error(e):
                    raise
                log.info("consumer repair deferred: %r", e)

    async def _repair(self, suspects: set[object]) -> None:
        watched = self._hub.live() if self._hub is not None else ()
        for item in watched:
            if item.cancelled or await item.is_attached():
                suspects.discard(item)
            elif item in suspects:
                suspects.discard(item)
                await item.reattach()
            else:
                suspects.add(item)
        if self._publisher is not None and self._publisher.is_closed:
            if self in suspects:
                suspects.discard(self)
                assert self._connection is not None
                self._publisher = await self._connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
                log.warning("replaced a dead publisher channel")
            else:
                suspects.add(self)

    async def _publish(
        self, channel: AbstractRobustChannel, spec: QueueSpec, body: bytes, priority: int
    ) -> None:
        await self._topology.ensure_declared(channel, spec)
        await wait_ready(channel)
        properties = aiormq.spec.Basic.Properties(
            # A transient message in a durable queue is kept in memory only: lost in a restart
            # of the node, when the store replays it (QueueSpec.persistent).
            delivery_mode=PERSISTENT if spec.persistent else TRANSIENT,
            # AMQP priority is an octet; RabbitMQ treats one above x-max-priority as the max.
            priority=None if spec.max_priority is None else min(max(priority, 0), 255),
        )
        # The concrete aiormq Channel: its basic_publish takes `wait`, the abstract one does not.
        underlay = cast(aiormq.Channel, await channel.get_underlay_channel())
        self._publishing += 1
        try:
            # What Exchange.publish does, minus an aio_pika.Message per publish, and with
            # wait=False: the default waits, holding the channel's lock, until the writer task
            # has written the frame, so concurrent publishes went out one per loop iteration.
            # The confirm is still awaited, and the writer queue is bounded (backpressure).
            await underlay.basic_publish(
                body, routing_key=spec.name, properties=properties, mandatory=True, wait=False
            )
        except aio_pika.exceptions.PublishError:
            # Returned as unroutable: the queue is gone (deleted, or a fresh node).
            self._topology.declared.discard(spec.name)
            raise
        finally:
            self._publishing -= 1
