"""The RabbitMQ adapter of the Broker port, on aio-pika. The only module that imports aio_pika.

Topology, declared on first use from each QueueSpec:

    <queue>            durable classic queue; x-max-priority, x-message-ttl (ms) and
                       x-dead-letter-exchange=<prefix>.dlx
    <prefix>.dlx       headers exchange → <prefix>.dead-letters, for rejected messages only
    <topic>            durable fanout exchange; each subscriber binds its own exclusive queue

One robust connection (`connect_robust`) carries everything. It reconnects by itself, and its
robust channels redeclare their queues, exchanges and bindings and restart their consumers, so
consumers and topic subscriptions resume after RabbitMQ comes back. Its socket writes are
coalesced over `write_window_s` (see coalescing_writer.py).

Consumers share a few channels. A gateway may hold 10,000 drone consumers and RabbitMQ allows
2047 channels per connection, so one channel per consumer (aio-pika's examples) does not scale.
basic.qos with global=False sets the prefetch of each consumer started afterwards on that
channel, so channels are pooled by prefetch value and every consumer keeps its own prefetch.
A pool grows to `channels_per_pool` channels before a channel takes a second consumer: aiormq
holds a channel's lock from a basic.consume or basic.cancel until its reply, so consumers that
start and stop often (drone sessions) would otherwise wait for each other's round trips.
"""

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, cast

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustQueue,
)
from yarl import URL

from shared.broker import TRANSIENT_RETRY_DELAY_S, Handler, Outgoing, TopicHandler
from shared.broker.coalescing_writer import CoalescingWriter
from shared.errors import TRANSIENT_ERRORS, BrokerError, BrokerUnavailable
from shared.protocol import Queues, QueueSpec

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 2.0

# TimeoutError is an OSError; ChannelInvalidStateError (a RuntimeError) means "channel closed".
# While a robust connection is down, aio-pika raises a bare RuntimeError ("<Connection …>
# closed") from channel(): it is the same outage and must reach callers as BrokerUnavailable,
# or their retry loops die with it.
_DRIVER_ERRORS: tuple[type[Exception], ...] = (
    aio_pika.exceptions.AMQPError,
    aio_pika.exceptions.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    RuntimeError,
)
_PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)
# An error a retry cannot fix: a queue redeclared with other arguments.
_PERMANENT_ERRORS: tuple[type[Exception], ...] = (aio_pika.exceptions.ChannelPreconditionFailed,)


@contextmanager
def _translated_errors() -> Iterator[None]:
    """No driver exception leaves the adapter (the port's contract); dramatiq does the same."""
    try:
        yield
    except _PERMANENT_ERRORS as e:
        raise BrokerError(f"RabbitMQ refused: {e}") from None
    except _DRIVER_ERRORS as e:
        raise BrokerUnavailable(f"RabbitMQ: {type(e).__name__}: {e}") from None


class _AmqpDelivery:
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
        with _translated_errors():
            await self._message.ack()

    async def reject(self, *, requeue: bool) -> None:
        if self.settled:
            return
        self.settled = True
        with _translated_errors():
            # RabbitMQ puts a requeued message back at its original position where it can.
            await self._message.reject(requeue=requeue)


@dataclass(eq=False)
class _ChannelSlot:
    """One pooled consumer channel; all its consumers share one prefetch value."""

    channel: AbstractRobustChannel
    consumers: int = 0
    queues: dict[str, AbstractRobustQueue] = field(default_factory=dict)


class _AmqpConsumer:
    def __init__(
        self,
        broker: "RabbitMQBroker",
        spec: QueueSpec,
        slot: _ChannelSlot,
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
        return await _consuming(self._slot.channel, self.tag)

    async def reattach(self) -> None:
        """Consume again on a healthy channel, forgetting the lost registration."""
        old_slot, old_queue, old_tag = self._slot, self._queue, self.tag
        with suppress(*_DRIVER_ERRORS, TimeoutError):
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
            with suppress(*_DRIVER_ERRORS):
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
                await _settle_quietly(message, requeue=True)
                return
            delivery = _AmqpDelivery(message)
            try:
                await self._handler(delivery)
            except TRANSIENT_ERRORS as e:
                if not delivery.settled:
                    log.warning("requeueing a message of %s: %r", self._queue.name, e)
                    delivery.settled = True
                    await asyncio.sleep(TRANSIENT_RETRY_DELAY_S)
                    await _settle_quietly(message, requeue=True)
            except Exception:
                log.exception("handler failed; dead-lettering its message of %s", self._queue.name)
                if not delivery.settled:
                    delivery.settled = True
                    await _settle_quietly(message, requeue=False)
            else:
                if not delivery.settled:
                    delivery.settled = True
                    await _settle_quietly(message, requeue=None)

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
        except _DRIVER_ERRORS as e:
            log.debug("cancelling consumer %s of %s: %r", self.tag, self._queue.name, e)


async def _consuming(channel: AbstractRobustChannel, tag: str | None) -> bool:
    """Whether `tag` is a live consumer on `channel` as the client sees it."""
    if tag is None or channel.is_closed:
        return False
    try:
        underlay = await channel.get_underlay_channel()
    except _DRIVER_ERRORS:
        return False
    # aiormq's Channel keeps its live consumers by tag; the abstract type does not say so.
    return tag in underlay.consumers  # type: ignore[attr-defined]


async def _settle_quietly(message: AbstractIncomingMessage, *, requeue: bool | None) -> None:
    """Ack (requeue=None) or reject. If the channel is gone RabbitMQ requeues the message by
    itself, and the consumers are idempotent, so a failure here is only logged."""
    try:
        if requeue is None:
            await message.ack()
        else:
            await message.reject(requeue=requeue)
    except _DRIVER_ERRORS as e:
        log.info("could not settle a message (RabbitMQ will redeliver it): %r", e)


class _TopicSubscription:
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
        return await _consuming(self._channel, self.tag)

    async def reattach(self) -> None:
        """Listen again through a new queue: the exclusive one died with its connection."""
        with suppress(*_DRIVER_ERRORS, TimeoutError):
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
        except _DRIVER_ERRORS as e:
            log.debug("cancelling topic queue %s: %r", self._queue.name, e)


class _CoalescingTransportFactory(aiormq.connection.TransportFactory):
    def __init__(self, window_s: float, busy: Callable[[], bool]) -> None:
        self._window_s = window_s
        self._busy = busy

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # What aiormq picks when given no factory, with the writer wrapped.
        inner: aiormq.connection.TransportFactory = (
            aiormq.connection.TLSTransportFactory()
            if url.scheme == "amqps"
            else aiormq.connection.TCPTransportFactory()
        )
        reader, writer = await inner.create(url, **kwargs)
        coalescing = CoalescingWriter(writer, self._window_s, self._busy)
        return reader, cast(asyncio.StreamWriter, coalescing)


class _RobustConnection(aio_pika.RobustConnection):
    """connect_robust's connection, with its socket writes coalesced."""

    def __init__(
        self, url: URL, *, write_window_s: float, busy: Callable[[], bool], **kwargs: Any
    ) -> None:
        super().__init__(url, **kwargs)
        if write_window_s > 0:
            # aio-pika hands self.kwargs to aiormq.connect on every (re)connect. A transport
            # factory is not one of its URL parameters, so connect_robust cannot pass it.
            self.kwargs["transport_factory"] = _CoalescingTransportFactory(write_window_s, busy)


class RabbitMQBroker:
    """Durable queues on RabbitMQ. `timeout_s` bounds every wait on RabbitMQ (a publish and
    its confirm, a declaration, a cancel), including a wait for the connection to come back;
    past it the call raises BrokerUnavailable."""

    def __init__(
        self,
        url: str,
        queues: Queues,
        *,
        timeout_s: float = 10.0,
        reconnect_interval_s: float = 2.0,
        consumers_per_channel: int = 500,
        channels_per_pool: int = 16,
        shutdown_timeout_s: float = 5.0,
        write_window_s: float = 0.002,
    ) -> None:
        self._url = url
        self._queues = queues
        self._dlx_name = f"{queues.prefix}.dlx"
        self._timeout_s = timeout_s
        self._reconnect_interval_s = reconnect_interval_s
        self._consumers_per_channel = consumers_per_channel
        self._channels_per_pool = channels_per_pool
        self._shutdown_timeout_s = shutdown_timeout_s
        self._write_window_s = write_window_s
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractRobustChannel | None = None
        self._topic_channel: AbstractRobustChannel | None = None
        self._pools: dict[int, list[_ChannelSlot]] = {}
        self._pool_lock = asyncio.Lock()
        self._declared: set[str] = set()
        self._topic_exchanges: dict[str, AbstractExchange] = {}
        self._consumers: set[_AmqpConsumer] = set()
        self._topic_subscriptions: set[_TopicSubscription] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self._publishing = 0  # publishes awaiting their confirm
        self._closed = False

    async def __aenter__(self) -> Self:
        with _translated_errors():
            # What aio_pika.connect_robust does, with our connection class.
            connection = _RobustConnection(
                aio_pika.connection.make_url(self._url),
                reconnect_interval=self._reconnect_interval_s,
                client_properties={"connection_name": f"droneflow {self._queues.prefix}"},
                write_window_s=self._write_window_s,
                # With confirms outstanding RabbitMQ is working for us: later frames may wait.
                busy=lambda: self._publishing > 1,
            )
            await connection.connect(timeout=self._timeout_s)
            self._connection = connection
            try:
                # Publisher confirms: `publish` returns only once RabbitMQ has taken the
                # message. on_return_raises: a mandatory message no queue took is an error.
                self._publisher = await self._connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
                await self._declare_dead_letters(self._publisher)
            except BaseException:
                await self._connection.close()
                raise
        # After a reconnect the node may be a fresh one: declare queues again on first use.
        self._connection.reconnect_callbacks.add(self._forget_declarations)
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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._shutdown_timeout_s
        # Stop deliveries first, let running handlers settle, then close: closing a channel
        # would make RabbitMQ requeue what the handlers are about to ack. If RabbitMQ is away,
        # the cancels would wait for it; the shutdown budget bounds them.
        with suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await asyncio.gather(
                    *(c.cancel() for c in tuple(self._consumers)),
                    *(s.cancel() for s in tuple(self._topic_subscriptions)),
                )
        while self._tasks and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait(tuple(self._tasks), timeout=remaining)
        if self._tasks:
            log.warning("cancelling %d handlers still running at shutdown", len(self._tasks))
            pending = tuple(self._tasks)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._connection is not None:
            try:
                await self._connection.close()
            except _DRIVER_ERRORS as e:
                log.debug("closing the RabbitMQ connection: %r", e)

    @property
    def durable(self) -> bool:
        return True

    async def publish(self, queue: QueueSpec, body: bytes, *, priority: int = 0) -> None:
        channel = self._require_publisher()
        with _translated_errors():
            async with asyncio.timeout(self._timeout_s):
                await self._publish(channel, queue, body, priority)

    async def publish_many(self, messages: Sequence[Outgoing]) -> None:
        channel = self._require_publisher()
        with _translated_errors():
            async with asyncio.timeout(self._timeout_s):
                for spec in {m.queue.name: m.queue for m in messages}.values():
                    await self._ensure_declared(channel, spec)
                # Pipelined: every message goes out before the first confirm is awaited.
                results = await asyncio.gather(
                    *(self._publish(channel, m.queue, m.body, m.priority) for m in messages),
                    return_exceptions=True,
                )
        error = next((r for r in results if isinstance(r, BaseException)), None)
        if error is not None:
            with _translated_errors():
                raise error

    async def consume(self, queue: QueueSpec, handler: Handler, *, prefetch: int) -> _AmqpConsumer:
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        self._require_publisher()
        with _translated_errors():
            async with asyncio.timeout(self._timeout_s):
                # The callback must exist before the consumer does: route it through a cell.
                target: list[_AmqpConsumer] = []

                async def deliver(message: AbstractIncomingMessage) -> None:
                    await target[0].on_message(message)

                slot, amqp_queue, tag = await self._attach(queue, deliver, prefetch)
        consumer = _AmqpConsumer(self, queue, slot, amqp_queue, handler, prefetch)
        consumer.tag = tag
        target.append(consumer)
        self._consumers.add(consumer)
        return consumer

    async def _attach(
        self,
        spec: QueueSpec,
        callback: Callable[[AbstractIncomingMessage], Awaitable[None]],
        prefetch: int,
    ) -> tuple[_ChannelSlot, AbstractRobustQueue, str]:
        slot = await self._reserve_slot(prefetch)
        try:
            amqp_queue = slot.queues.get(spec.name)
            if amqp_queue is None:
                # Declared on the consumer's own channel (robust=True), so that this channel
                # redeclares the queue before it restarts the consumer.
                declared = await slot.channel.declare_queue(
                    spec.name, durable=True, arguments=self._arguments(spec)
                )
                amqp_queue = slot.queues.setdefault(spec.name, declared)
            # Manual acks: priority order only holds with manual acks and a small prefetch,
            # and a message must survive a consumer that dies mid-way.
            tag = await amqp_queue.consume(callback, no_ack=False)
        except BaseException:
            slot.consumers -= 1
            raise
        return slot, amqp_queue, tag

    async def broadcast(self, topic: str, body: bytes) -> None:
        channel = self._require_publisher()
        with _translated_errors():
            async with asyncio.timeout(self._timeout_s):
                exchange = self._topic_exchanges.get(topic)
                if exchange is None:
                    exchange = await self._declare_topic(channel, topic, robust=False)
                    self._topic_exchanges[topic] = exchange
                await self._wait_ready(channel)
                # Not mandatory and not persistent: a topic keeps nothing for absent listeners.
                await exchange.publish(aio_pika.Message(body), routing_key="", mandatory=False)

    async def subscribe(self, topic: str, handler: TopicHandler) -> _TopicSubscription:
        self._require_publisher()
        with _translated_errors():
            async with asyncio.timeout(self._timeout_s):
                target: list[_TopicSubscription] = []

                async def deliver(message: AbstractIncomingMessage) -> None:
                    await target[0].on_message(message)

                channel, queue, tag = await self._listen(topic, deliver)
        subscription = _TopicSubscription(self, topic, channel, queue, handler)
        subscription.tag = tag
        target.append(subscription)
        self._topic_subscriptions.add(subscription)
        return subscription

    async def _listen(
        self, topic: str, callback: Callable[[AbstractIncomingMessage], Awaitable[None]]
    ) -> tuple[AbstractRobustChannel, AbstractRobustQueue, str]:
        channel = await self._get_topic_channel()
        exchange = await self._declare_topic(channel, topic, robust=True)
        # Named by us, not by the server: the robust channel redeclares it under the same name
        # after a reconnect (exclusive queues die with their connection).
        queue = await channel.declare_queue(
            f"{topic}.listener.{uuid.uuid4().hex}", exclusive=True, auto_delete=True
        )
        await queue.bind(exchange, routing_key="")
        # no_ack: broadcasts are fire-and-forget; a lost one is not redelivered anyway.
        tag = await queue.consume(callback, no_ack=True)
        return channel, queue, tag

    async def queue_depth(self, queue: QueueSpec) -> int:
        channel = self._require_publisher()
        with _translated_errors():
            async with asyncio.timeout(self._timeout_s):
                await self._wait_ready(channel)
                # A redeclaration with the same arguments is a no-op that reports the count of
                # ready messages; a passive one would close the channel if the queue is missing.
                declared = await channel.declare_queue(
                    queue.name, durable=True, arguments=self._arguments(queue), robust=False
                )
        self._declared.add(queue.name)
        count = declared.declaration_result.message_count
        return count if count is not None else 0

    # --- internals ----------------------------------------------------------------------

    def _require_publisher(self) -> AbstractRobustChannel:
        if self._closed or self._publisher is None:
            raise BrokerUnavailable("the RabbitMQ broker is not open")
        return self._publisher

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
            except (*_DRIVER_ERRORS, TimeoutError) as e:  # type: ignore[misc]
                log.info("consumer repair deferred: %r", e)

    async def _repair(self, suspects: set[object]) -> None:
        watched: list[_AmqpConsumer | _TopicSubscription] = [
            *self._consumers,
            *self._topic_subscriptions,
        ]
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

    def _forget_declarations(self, *_: object) -> None:
        self._declared.clear()
        self._topic_exchanges.clear()

    @staticmethod
    async def _wait_ready(channel: AbstractRobustChannel) -> None:
        # During a reconnect the channel is closed and a publish would fail at once; waiting
        # (bounded by the caller's timeout) rides out a short outage instead.
        if channel.is_closed:
            await channel.ready()

    def _arguments(self, spec: QueueSpec) -> dict[str, Any]:
        # Classic, because priorities need a classic queue; explicit, in case the server's
        # default queue type is quorum.
        arguments: dict[str, Any] = {"x-queue-type": "classic"}
        if spec.name != self._queues.dead_letters.name:
            arguments["x-dead-letter-exchange"] = self._dlx_name
        if spec.max_priority is not None:
            arguments["x-max-priority"] = spec.max_priority
        if spec.message_ttl_s is not None:
            arguments["x-message-ttl"] = round(spec.message_ttl_s * 1000)
        return arguments

    async def _declare_dead_letters(self, channel: AbstractRobustChannel) -> None:
        # A headers exchange, so that only rejected messages become dead letters: queues
        # dead-letter expired messages too, and an app notification that expired after 24 h
        # is not a poison message. "all-with-x" (RabbitMQ >= 3.10) is needed because plain
        # "all" ignores x- headers when matching.
        dlx = await channel.declare_exchange(
            self._dlx_name, aio_pika.ExchangeType.HEADERS, durable=True
        )
        spec = self._queues.dead_letters
        queue = await channel.declare_queue(
            spec.name, durable=True, arguments=self._arguments(spec)
        )
        await queue.bind(
            dlx,
            routing_key="",
            arguments={"x-match": "all-with-x", "x-first-death-reason": "rejected"},
        )
        self._declared.add(spec.name)

    async def _ensure_declared(self, channel: AbstractRobustChannel, spec: QueueSpec) -> None:
        if spec.name in self._declared:
            return
        await self._wait_ready(channel)
        # robust=False: the queue is durable, and consumer channels redeclare their own queues;
        # re-declaring every queue ever published to on each reconnect would slow recovery.
        await channel.declare_queue(
            spec.name, durable=True, arguments=self._arguments(spec), robust=False
        )
        self._declared.add(spec.name)

    async def _publish(
        self, channel: AbstractRobustChannel, spec: QueueSpec, body: bytes, priority: int
    ) -> None:
        await self._ensure_declared(channel, spec)
        await self._wait_ready(channel)
        properties = aiormq.spec.Basic.Properties(
            delivery_mode=_PERSISTENT,
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
            self._declared.discard(spec.name)
            raise
        finally:
            self._publishing -= 1

    async def _declare_topic(
        self, channel: AbstractRobustChannel, topic: str, *, robust: bool
    ) -> AbstractExchange:
        # Durable, so that a cached exchange still exists after RabbitMQ restarts; publishing
        # to a missing exchange would close the publisher channel.
        return await channel.declare_exchange(
            topic, aio_pika.ExchangeType.FANOUT, durable=True, robust=robust
        )

    async def _get_topic_channel(self) -> AbstractRobustChannel:
        async with self._pool_lock:
            if self._topic_channel is None or self._topic_channel.is_closed:
                assert self._connection is not None
                self._topic_channel = await self._connection.channel(publisher_confirms=False)
            return self._topic_channel

    async def _reserve_slot(self, prefetch: int) -> _ChannelSlot:
        async with self._pool_lock:
            # A channel that stayed closed after a reconnect is dead: use it no more.
            slots = self._pools[prefetch] = [
                s
                for s in self._pools.get(prefetch, [])
                if s.consumers > 0 or not s.channel.is_closed
            ]
            live = [s for s in slots if not s.channel.is_closed]
            if live:
                slot = min(live, key=lambda s: s.consumers)
                if slot.consumers == 0 or (
                    len(slots) >= self._channels_per_pool
                    and slot.consumers < self._consumers_per_channel
                ):
                    slot.consumers += 1
                    return slot
            assert self._connection is not None
            channel = await self._connection.channel(publisher_confirms=False)
            try:
                # global_=False: the prefetch applies to each consumer started on this channel.
                # The robust channel re-applies it before restarting consumers on a reconnect.
                await channel.set_qos(prefetch_count=prefetch, global_=False)
            except BaseException:
                await channel.close()
                raise
            slot = _ChannelSlot(channel, consumers=1)
            slots.append(slot)
            return slot
