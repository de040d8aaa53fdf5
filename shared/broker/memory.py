"""The in-process adapter of the Broker port: the hot path of embedded mode, and the broker that
tests use without RabbitMQ. Like dramatiq's StubBroker it is a full adapter, not a fake: real
priority queues, per-consumer prefetch, manual acks, requeue in place, dead letters and TTL.

Nothing polls. Messages are pushed to consumers as they arrive: `publish` hands a message straight
to a consumer with a free slot, and a handler that finishes pulls the next one. A queue keeps a
list of its consumers that have a free slot, so each hand-over is O(log n) (one heap pop); a
queue has one consumer or a few, so a list (pop(0)) costs no more than a deque, which takes
~700 bytes more per queue, one per connected drone.

A queue that is empty and has no consumer is forgotten: it is the same as one not yet declared,
and a gateway that sees 18,000 drones come and go must not keep a queue for each of them.
"""

import asyncio
import heapq
import itertools
import logging
import math
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from shared.broker import Handler, Outgoing, TopicHandler
from shared.broker.policy import DEAD_LETTER, REQUEUE, HandlerTasks, run_handler, run_topic_handler
from shared.broker.queues import Queues, QueueSpec
from shared.errors import BrokerError, BrokerUnavailable

log = logging.getLogger(__name__)


class _Message:
    __slots__ = ("body", "expires_at", "key", "redelivered", "seq")

    def __init__(self, body: bytes, key: int, seq: int, expires_at: float) -> None:
        self.body = body
        self.key = key  # -priority, so that the min-heap hands out the highest priority first
        self.seq = seq  # publish order; a requeued message keeps it and so its place
        self.expires_at = expires_at
        self.redelivered = False


class _Queue:
    __slots__ = ("consumers", "heap", "ready", "spec")

    def __init__(self, spec: QueueSpec) -> None:
        self.spec = spec
        # (key, seq, message): seq is unique, so tuples never compare the messages themselves.
        self.heap: list[tuple[int, int, _Message]] = []
        # Consumers with a free slot, in round-robin order; each appears at most once.
        self.ready: list[_Consumer] = []
        self.consumers = 0


class _Consumer:
    """A consumer of one queue; also its Subscription.

    Its handlers run on worker tasks that stay for the next message instead of a task per
    delivery: a worker that finishes waits on a future in `idle`, and a hand-over resolves it.
    There are never more workers than `prefetch`."""

    __slots__ = (
        "_broker",
        "cancelled",
        "handler",
        "idle",
        "in_ready",
        "prefetch",
        "queue",
        "running",
    )

    def __init__(self, broker: "InMemoryBroker", queue: _Queue, handler: Handler, prefetch: int):
        self._broker = broker
        self.queue = queue
        self.handler = handler
        self.prefetch = prefetch
        self.running = 0
        self.in_ready = False
        self.cancelled = False
        self.idle: list[asyncio.Future[_MemoryDelivery | None]] = []

    async def cancel(self) -> None:
        # Synchronous inside, so a handler may cancel its own consumer without waiting on itself.
        self._broker._cancel_consumer(self)


class _MemoryDelivery:
    __slots__ = ("_broker", "message", "queue", "settled")

    def __init__(self, broker: "InMemoryBroker", queue: _Queue, message: _Message) -> None:
        self._broker = broker
        self.queue = queue
        self.message = message
        self.settled = False

    @property
    def body(self) -> bytes:
        return self.message.body

    @property
    def redelivered(self) -> bool:
        return self.message.redelivered

    async def ack(self) -> None:
        # The message left the queue when it was handed over; acking only forgets it.
        self.settled = True

    async def reject(self, *, requeue: bool) -> None:
        if self.settled:  # settling twice is a no-op, as RabbitMQBroker's deliveries do
            return
        self.settled = True
        if requeue:
            self._broker._requeue(self.queue, self.message)
        else:
            self._broker._dead_letter(self.queue, self.message)


class _TopicSubscription:
    __slots__ = ("_broker", "handler", "topic")

    def __init__(self, broker: "InMemoryBroker", topic: str, handler: TopicHandler) -> None:
        self._broker = broker
        self.topic = topic
        self.handler = handler

    async def cancel(self) -> None:
        topics = self._broker._topics
        subscribers = topics.get(self.topic)
        if subscribers is not None:
            subscribers.pop(self, None)
            if not subscribers:
                del topics[self.topic]


class InMemoryBroker:
    """Queues live in this process and die with it (`durable` is False).

    Semantics follow RabbitMQ where the port leaves room: priorities are clamped to
    0..max_priority and ignored on queues without one; a requeued message goes back to its
    original place with `redelivered` set; expired messages are dropped (never dead-lettered)
    when they reach the head of the queue; rejecting a dead letter drops it. Settling a delivery
    twice is a no-op.
    """

    def __init__(self, queues: Queues, *, shutdown_timeout_s: float = 5.0) -> None:
        self._queues_spec = queues
        self._shutdown_timeout_s = shutdown_timeout_s
        self._queues: dict[str, _Queue] = {}
        self._topics: dict[str, dict[_TopicSubscription, None]] = {}
        self._consumers: set[_Consumer] = set()
        self._handlers = HandlerTasks()
        self._seq = itertools.count()
        self._closed = False
        self._dead_letters = self._queue(queues.dead_letters)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        for consumer in tuple(self._consumers):
            self._cancel_consumer(consumer)
        self._topics.clear()
        await self._handlers.drain(asyncio.get_running_loop().time() + self._shutdown_timeout_s)

    @property
    def durable(self) -> bool:
        return False

    async def publish(self, queue: QueueSpec, body: bytes, *, priority: int = 0) -> None:
        self._check_open()
        self._push(self._queue(queue), body, priority)

    async def publish_many(self, messages: Sequence[Outgoing]) -> None:
        self._check_open()
        for message in messages:
            self._push(self._queue(message.queue), message.body, message.priority)

    async def consume(self, queue: QueueSpec, handler: Handler, *, prefetch: int) -> _Consumer:
        self._check_open()
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        q = self._queue(queue)
        consumer = _Consumer(self, q, handler, prefetch)
        self._consumers.add(consumer)
        q.consumers += 1
        consumer.in_ready = True
        q.ready.append(consumer)
        self._dispatch(q)
        return consumer

    async def broadcast(self, topic: str, body: bytes) -> None:
        self._check_open()
        for subscription in tuple(self._topics.get(topic, ())):
            self._handlers.spawn(run_topic_handler(subscription.handler, body, topic))

    async def subscribe(self, topic: str, handler: TopicHandler) -> _TopicSubscription:
        self._check_open()
        subscription = _TopicSubscription(self, topic, handler)
        self._topics.setdefault(topic, {})[subscription] = None
        return subscription

    async def queue_depth(self, queue: QueueSpec) -> int:
        if queue.name not in self._queues:
            return 0  # declaring it here would only keep an empty queue
        q = self._queue(queue)
        if queue.message_ttl_s is not None:
            # Off the hot path, so drop every expired message, not only those at the head.
            now = asyncio.get_running_loop().time()
            live = [entry for entry in q.heap if entry[2].expires_at > now]
            if len(live) != len(q.heap):
                heapq.heapify(live)
                q.heap = live
                self._forget_if_unused(q)
        return len(q.heap)

    def queue_names(self) -> set[str]:
        """The queues this broker holds now: those with messages or a consumer, and the dead
        letters' (for tests of what departed ids leave behind)."""
        return set(self._queues)

    # --- internals ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerUnavailable("the in-memory broker is closed")

    def _queue(self, spec: QueueSpec) -> _Queue:
        q = self._queues.get(spec.name)
        if q is None:
            q = self._queues[spec.name] = _Queue(spec)
        elif q.spec is not spec and q.spec != spec:
            # RabbitMQ refuses such a redeclaration (PRECONDITION_FAILED); so do we.
            raise BrokerError(f"queue {spec.name!r} already declared as {q.spec}, not {spec}")
        return q

    def _push(self, q: _Queue, body: bytes, priority: int) -> None:
        spec = q.spec
        max_priority = spec.max_priority
        # RabbitMQ treats a priority above the queue's maximum as the maximum, and a queue
        # without x-max-priority ignores priorities.
        key = 0 if max_priority is None else -min(max(priority, 0), max_priority)
        ttl_s = spec.message_ttl_s
        expires_at = math.inf if ttl_s is None else asyncio.get_running_loop().time() + ttl_s
        seq = next(self._seq)
        heapq.heappush(q.heap, (key, seq, _Message(body, key, seq, expires_at)))
        if q.ready:
            self._dispatch(q)

    def _dispatch(self, q: _Queue) -> None:
        heap, ready = q.heap, q.ready
        if not (heap and ready):
            return
        now = asyncio.get_running_loop().time() if q.spec.message_ttl_s is not None else 0.0
        while heap and ready:
            message = heapq.heappop(heap)[2]
            if message.expires_at <= now:
                continue
            consumer = ready.pop(0)
            consumer.running += 1
            if consumer.running < consumer.prefetch:
                ready.append(consumer)
            else:
                consumer.in_ready = False
            self._hand_over(consumer, _MemoryDelivery(self, q, message))

    def _hand_over(self, consumer: _Consumer, delivery: _MemoryDelivery) -> None:
        idle = consumer.idle
        while idle:
            waiter = idle.pop()
            if not waiter.done():  # a worker cancelled at shutdown leaves its waiter behind
                waiter.set_result(delivery)
                return
        self._handlers.spawn(self._work(consumer, delivery))

    async def _work(self, consumer: _Consumer, first: _MemoryDelivery) -> None:
        delivery: _MemoryDelivery | None = first
        loop = asyncio.get_running_loop()
        while delivery is not None:
            try:
                verdict = await run_handler(consumer.handler, delivery, consumer.queue.spec.name)
            except BaseException:
                # Cancelled at shutdown: the message must not vanish with the task.
                await delivery.reject(requeue=True)
                self._release(consumer)
                raise
            if verdict is REQUEUE:
                self._requeue(delivery.queue, delivery.message)
            elif verdict is DEAD_LETTER:
                self._dead_letter(delivery.queue, delivery.message)
            if consumer.cancelled:
                self._release(consumer)
                return
            # Wait for the next message before the slot is given up, so that the hand-over the
            # release may make right away finds this worker.
            waiter: asyncio.Future[_MemoryDelivery | None] = loop.create_future()
            consumer.idle.append(waiter)
            self._release(consumer)
            if waiter.done():
                # The release handed this worker the next message at once. Awaiting a done
                # future does not yield, so without this a handler that requeues its message
                # (a drone session with no free slot) would spin without ever letting the
                # event loop run what frees the slot.
                await asyncio.sleep(0)
            delivery = await waiter

    def _release(self, consumer: _Consumer) -> None:
        consumer.running -= 1
        if consumer.cancelled:
            return
        q = consumer.queue
        if not consumer.in_ready:
            consumer.in_ready = True
            q.ready.append(consumer)
        if q.heap:
            self._dispatch(q)

    def _cancel_consumer(self, consumer: _Consumer) -> None:
        if consumer.cancelled:
            return
        consumer.cancelled = True
        self._consumers.discard(consumer)
        q = consumer.queue
        q.consumers -= 1
        if consumer.in_ready:
            consumer.in_ready = False
            # O(consumers of this queue), once per cancel; a queue rarely has more than a few.
            q.ready.remove(consumer)
        idle, consumer.idle = consumer.idle, []
        for waiter in idle:
            if not waiter.done():
                waiter.set_result(None)  # its worker ends
        # Deliveries its handlers still hold may come back: _live_queue declares it again.
        self._forget_if_unused(q)

    def _forget_if_unused(self, q: _Queue) -> None:
        unused = not q.heap and not q.consumers and q is not self._dead_letters
        if unused and self._queues.get(q.spec.name) is q:
            del self._queues[q.spec.name]

    def _live_queue(self, q: _Queue) -> _Queue:
        """The queue now declared under q's name: q itself, unless it was forgotten meanwhile
        (a delivery outlived its queue's last consumer). Nothing awaits between this and the
        push that follows, so no publish can slip in between."""
        live = self._queues.get(q.spec.name)
        if live is None:
            live = self._queues[q.spec.name] = q
        return live

    def _requeue(self, q: _Queue, message: _Message) -> None:
        message.redelivered = True
        q = self._live_queue(q)
        heapq.heappush(q.heap, (message.key, message.seq, message))
        if q.ready and not self._closed:
            self._dispatch(q)

    def _dead_letter(self, q: _Queue, message: _Message) -> None:
        if q is self._dead_letters:
            log.warning("dropping a rejected dead letter")
            return
        self._push(self._dead_letters, message.body, 0)
