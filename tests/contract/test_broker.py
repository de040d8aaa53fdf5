"""The Broker contract, written once against the port and run against every adapter.

The RabbitMQ parameter needs DRONEFLOW_TEST_RABBITMQ_URL and skips with the reason otherwise
(fails under CI=true). Tests wait on events with timeouts; the only fixed waits are for a
message TTL to run out.
"""

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, suppress
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
import pytest

from shared.broker import Broker, Delivery, Handler, Outgoing, Subscription
from shared.broker.memory import InMemoryBroker
from shared.broker.queues import Queues, QueueSpec
from shared.broker.rabbitmq import RabbitMQBroker
from shared.errors import BrokerUnavailable, StoreUnavailable

TIMEOUT_S = 10.0

BrokerFactory = Callable[[], AbstractAsyncContextManager[Broker]]


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def make_broker(request: pytest.FixtureRequest, unique_queues: Queues) -> BrokerFactory:
    """Builds a fresh, not yet entered adapter; every call shares the same queue names."""
    if request.param == "memory":
        return lambda: InMemoryBroker(unique_queues)
    url: str = request.getfixturevalue("rabbitmq_url")
    return lambda: RabbitMQBroker(url, unique_queues, reconnect_interval_s=0.5)


@pytest.fixture
async def broker(make_broker: BrokerFactory) -> AsyncIterator[Broker]:
    async with make_broker() as entered:
        yield entered


class Inbox:
    """What handlers received, in order; tests wait until enough has arrived."""

    def __init__(self) -> None:
        self.items: list[bytes] = []
        self.redelivered: list[bool] = []
        self._changed = asyncio.Event()

    def put(self, body: bytes, *, redelivered: bool = False) -> None:
        self.items.append(body)
        self.redelivered.append(redelivered)
        self._changed.set()

    async def take(self, delivery: Delivery) -> None:
        """A handler that records the delivery and lets the adapter ack it."""
        self.put(delivery.body, redelivered=delivery.redelivered)

    async def hear(self, body: bytes) -> None:
        """A topic handler."""
        self.put(body)

    async def wait_for(self, count: int, timeout_s: float = TIMEOUT_S) -> list[bytes]:
        async with asyncio.timeout(timeout_s):
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()
        return list(self.items)


def bodies(*names: str) -> list[bytes]:
    return [name.encode() for name in names]


# --- queues ------------------------------------------------------------------------------


async def test_broker_publish_then_consume_roundtrip(broker: Broker, unique_queues: Queues) -> None:
    queue = unique_queues.drone_events
    inbox = Inbox()
    await broker.consume(queue, inbox.take, prefetch=1)

    await broker.publish(queue, b"hello")

    assert await inbox.wait_for(1) == [b"hello"]
    assert inbox.redelivered == [False]


async def test_broker_queue_keeps_messages_until_a_consumer_comes(
    broker: Broker, unique_queues: Queues
) -> None:
    queue = unique_queues.drone_events
    for body in bodies("a", "b", "c"):
        await broker.publish(queue, body)
    assert await broker.queue_depth(queue) == 3

    inbox = Inbox()
    await broker.consume(queue, inbox.take, prefetch=1)

    assert await inbox.wait_for(3) == bodies("a", "b", "c")
    assert await broker.queue_depth(queue) == 0


async def test_broker_priority_queue_hands_out_highest_priority_first(
    broker: Broker, unique_queues: Queues
) -> None:
    # Given a backlog of mixed priorities
    queue = unique_queues.drone("d1")
    backlog = [(1, "1a"), (5, "5a"), (3, "3a"), (1, "1b"), (5, "5b"), (3, "3b"), (5, "5c")]
    for priority, name in backlog:
        await broker.publish(queue, name.encode(), priority=priority)

    # When one consumer with prefetch 1 drains it
    inbox = Inbox()
    await broker.consume(queue, inbox.take, prefetch=1)

    # Then higher priorities come first, FIFO within a priority
    assert await inbox.wait_for(7) == bodies("5a", "5b", "5c", "3a", "3b", "1a", "1b")


async def test_broker_priority_is_clamped_to_the_queue_range(
    broker: Broker, unique_queues: Queues
) -> None:
    queue = unique_queues.drone("d1")  # max_priority 5
    for priority, name in [(0, "zero"), (99, "high"), (5, "five"), (-3, "negative")]:
        await broker.publish(queue, name.encode(), priority=priority)

    inbox = Inbox()
    await broker.consume(queue, inbox.take, prefetch=1)

    assert await inbox.wait_for(4) == bodies("high", "five", "zero", "negative")


async def test_broker_queue_without_max_priority_is_fifo(
    broker: Broker, unique_queues: Queues
) -> None:
    queue = unique_queues.drone_events
    for priority, name in [(1, "a"), (5, "b"), (3, "c")]:
        await broker.publish(queue, name.encode(), priority=priority)

    inbox = Inbox()
    await broker.consume(queue, inbox.take, prefetch=1)

    assert await inbox.wait_for(3) == bodies("a", "b", "c")


async def test_broker_consume_runs_at_most_prefetch_handlers(
    broker: Broker, unique_queues: Queues
) -> None:
    queue = unique_queues.drone_events
    for i in range(20):
        await broker.publish(queue, str(i).encode())
    running = 0
    most_running = 0
    saturated = asyncio.Event()
    gate = asyncio.Event()
    inbox = Inbox()

    async def handler(delivery: Delivery) -> None:
        nonlocal running, most_running
        running += 1
        most_running = max(most_running, running)
        if running == 3:
            saturated.set()
        await gate.wait()
        running -= 1
        inbox.put(delivery.body)

    await broker.consume(queue, handler, prefetch=3)

    await asyncio.wait_for(saturated.wait(), TIMEOUT_S)
    assert await broker.queue_depth(queue) == 17  # exactly three were taken
    gate.set()
    assert sorted(await inbox.wait_for(20), key=int) == [str(i).encode() for i in range(20)]
    assert most_running == 3


async def test_broker_reject_requeue_redelivers_in_place(
    broker: Broker, unique_queues: Queues
) -> None:
    queue = unique_queues.drone("d1")
    for body in bodies("a", "b", "c"):
        await broker.publish(queue, body)
    inbox = Inbox()

    async def handler(delivery: Delivery) -> None:
        inbox.put(delivery.body, redelivered=delivery.redelivered)
        if delivery.body == b"a" and not delivery.redelivered:
            await delivery.reject(requeue=True)

    await broker.consume(queue, handler, prefetch=1)

    assert await inbox.wait_for(4) == bodies("a", "a", "b", "c")
    assert inbox.redelivered == [False, True, False, False]


async def test_broker_handler_that_keeps_requeueing_lets_the_event_loop_run(
    broker: Broker, unique_queues: Queues
) -> None:
    # A drone session with no free slot hands each delivery back until its pause takes effect,
    # and the pause is other work on the same event loop: it must get to run.
    queue = unique_queues.drone("d1")
    other_work_ran = asyncio.Event()
    settled = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        if other_work_ran.is_set():
            await delivery.ack()
            settled.set()
        else:
            await delivery.reject(requeue=True)

    async def other_work() -> None:
        other_work_ran.set()

    await broker.consume(queue, handler, prefetch=1)
    await broker.publish(queue, b"a")
    other = asyncio.create_task(other_work())
    await asyncio.wait_for(settled.wait(), 10)
    await other


async def test_broker_reject_without_requeue_dead_letters(
    broker: Broker, unique_queues: Queues
) -> None:
    queue = unique_queues.drone_events
    dead = Inbox()
    await broker.consume(unique_queues.dead_letters, dead.take, prefetch=1)

    async def handler(delivery: Delivery) -> None:
        await delivery.reject(requeue=False)

    await broker.consume(queue, handler, prefetch=1)
    await broker.publish(queue, b"poison")

    assert await dead.wait_for(1) == [b"poison"]
    assert await broker.queue_depth(queue) == 0


async def test_broker_handler_exception_dead_letters(broker: Broker, unique_queues: Queues) -> None:
    queue = unique_queues.drone("d1")
    dead = Inbox()
    await broker.consume(unique_queues.dead_letters, dead.take, prefetch=1)

    async def handler(delivery: Delivery) -> None:
        raise ValueError("a bug, not a transient error")

    await broker.consume(queue, handler, prefetch=1)
    await broker.publish(queue, b"poison", priority=3)

    assert await dead.wait_for(1) == [b"poison"]


@pytest.mark.parametrize("error", [BrokerUnavailable, StoreUnavailable])
async def test_broker_transient_error_requeues(
    broker: Broker, unique_queues: Queues, error: type[Exception]
) -> None:
    queue = unique_queues.drone_events
    inbox = Inbox()

    async def handler(delivery: Delivery) -> None:
        inbox.put(delivery.body, redelivered=delivery.redelivered)
        if not delivery.redelivered:
            raise error("down for a moment")

    await broker.consume(queue, handler, prefetch=1)
    await broker.publish(queue, b"retry-me")

    assert await inbox.wait_for(2) == bodies("retry-me", "retry-me")
    assert inbox.redelivered == [False, True]


async def test_broker_acks_when_the_handler_returns(broker: Broker, unique_queues: Queues) -> None:
    # With prefetch 1 the next message only comes once the previous one is acked.
    queue = unique_queues.drone_events
    for body in bodies("a", "b", "c"):
        await broker.publish(queue, body)
    inbox = Inbox()

    await broker.consume(queue, inbox.take, prefetch=1)

    assert await inbox.wait_for(3) == bodies("a", "b", "c")
    assert inbox.redelivered == [False, False, False]


async def test_broker_does_not_settle_twice(broker: Broker, unique_queues: Queues) -> None:
    # A second settle would be an unknown delivery tag to RabbitMQ, which closes the channel
    # and redelivers everything unacked on it.
    queue = unique_queues.drone_events
    dead = Inbox()
    await broker.consume(unique_queues.dead_letters, dead.take, prefetch=1)
    for body in bodies("ack", "reject", "ack-twice", "last"):
        await broker.publish(queue, body)
    inbox = Inbox()

    async def handler(delivery: Delivery) -> None:
        inbox.put(delivery.body, redelivered=delivery.redelivered)
        if delivery.body == b"reject":
            await delivery.reject(requeue=False)
        else:
            await delivery.ack()
            if delivery.body == b"ack-twice":
                await delivery.ack()

    await broker.consume(queue, handler, prefetch=1)

    assert await inbox.wait_for(4) == bodies("ack", "reject", "ack-twice", "last")
    assert inbox.redelivered == [False] * 4
    assert await dead.wait_for(1) == [b"reject"]


async def test_broker_consumers_of_one_queue_share_its_messages(
    broker: Broker, unique_queues: Queues
) -> None:
    queue = unique_queues.drone_events
    for i in range(20):
        await broker.publish(queue, str(i).encode())
    inbox = Inbox()
    running = 0
    both_running = asyncio.Event()
    seen_by: dict[str, list[bytes]] = {"first": [], "second": []}

    def handler_for(name: str) -> Handler:
        async def handler(delivery: Delivery) -> None:
            nonlocal running
            seen_by[name].append(delivery.body)
            running += 1
            if running == 2:
                both_running.set()
            # With prefetch 1 each, two handlers running at once means both consumers got one.
            await both_running.wait()
            running -= 1
            inbox.put(delivery.body)

        return handler

    await broker.consume(queue, handler_for("first"), prefetch=1)
    await broker.consume(queue, handler_for("second"), prefetch=1)

    received = await inbox.wait_for(20)
    assert sorted(received, key=int) == [str(i).encode() for i in range(20)]
    assert seen_by["first"]
    assert seen_by["second"]


async def test_broker_cancel_inside_handler_stops_deliveries(
    broker: Broker, unique_queues: Queues
) -> None:
    # Given a backlog and a consumer that cancels itself on its first message
    queue = unique_queues.drone("d1")
    for body in bodies("a", "b", "c", "d", "e"):
        await broker.publish(queue, body)
    subscription: asyncio.Future[Subscription] = asyncio.get_running_loop().create_future()
    cancelled = asyncio.Event()
    first = Inbox()

    async def handler(delivery: Delivery) -> None:
        first.put(delivery.body)
        own = await subscription
        await own.cancel()
        await own.cancel()  # idempotent
        cancelled.set()

    subscription.set_result(await broker.consume(queue, handler, prefetch=1))

    # When it has cancelled
    await asyncio.wait_for(cancelled.wait(), TIMEOUT_S)

    # Then the rest stays in the queue, in order, for the next consumer
    assert await broker.queue_depth(queue) == 4
    second = Inbox()
    await broker.consume(queue, second.take, prefetch=1)
    assert await second.wait_for(4) == bodies("b", "c", "d", "e")
    assert first.items == [b"a"]
    assert second.redelivered == [False] * 4


async def test_broker_cancel_with_prefetch_loses_nothing(
    broker: Broker, unique_queues: Queues
) -> None:
    queue = unique_queues.drone_events
    everything = [str(i).encode() for i in range(12)]
    for body in everything:
        await broker.publish(queue, body)
    subscription: asyncio.Future[Subscription] = asyncio.get_running_loop().create_future()
    cancelled = asyncio.Event()
    first = Inbox()

    async def handler(delivery: Delivery) -> None:
        first.put(delivery.body)
        if len(first.items) == 1:
            await (await subscription).cancel()
            cancelled.set()

    subscription.set_result(await broker.consume(queue, handler, prefetch=4))
    await asyncio.wait_for(cancelled.wait(), TIMEOUT_S)
    handled_by_first = list(first.items)  # final: handlers record before anything else

    second = Inbox()
    await broker.consume(queue, second.take, prefetch=4)
    rest = await second.wait_for(len(everything) - len(handled_by_first))

    assert 1 <= len(handled_by_first) <= 4
    assert sorted(handled_by_first + rest, key=int) == everything


async def test_broker_message_ttl_drops_expired_messages(
    broker: Broker, unique_queues: Queues
) -> None:
    # Given a message that nobody consumed within the queue's TTL
    queue = QueueSpec(f"{unique_queues.prefix}.short-lived", message_ttl_s=0.3)
    await broker.publish(queue, b"stale")
    await asyncio.sleep(0.6)  # let the TTL run out: this waits for a deadline, not a race

    # When a consumer comes
    assert await broker.queue_depth(queue) == 0
    await broker.publish(queue, b"fresh")
    inbox = Inbox()
    await broker.consume(queue, inbox.take, prefetch=1)

    # Then it only gets the fresh one, and the stale one was dropped, not dead-lettered
    assert await inbox.wait_for(1) == [b"fresh"]
    await broker.publish(unique_queues.dead_letters, b"marker")
    dead = Inbox()
    await broker.consume(unique_queues.dead_letters, dead.take, prefetch=1)
    assert await dead.wait_for(1) == [b"marker"]


async def test_broker_queue_depth_counts_ready_messages(
    broker: Broker, unique_queues: Queues
) -> None:
    queue = unique_queues.drone("never-used")
    assert await broker.queue_depth(queue) == 0

    for priority in (1, 2, 3):
        await broker.publish(queue, b"x", priority=priority)

    assert await broker.queue_depth(queue) == 3


async def test_broker_publish_many_publishes_every_message(
    broker: Broker, unique_queues: Queues
) -> None:
    drone = unique_queues.drone("d1")
    events = unique_queues.drone_events
    await broker.publish_many(
        [
            Outgoing(drone, b"low", priority=1),
            Outgoing(events, b"event-1"),
            Outgoing(drone, b"high", priority=5),
            Outgoing(events, b"event-2"),
        ]
    )
    await broker.publish_many([])

    assert await broker.queue_depth(drone) == 2
    assert await broker.queue_depth(events) == 2
    drone_inbox, events_inbox = Inbox(), Inbox()
    await broker.consume(drone, drone_inbox.take, prefetch=1)
    await broker.consume(events, events_inbox.take, prefetch=1)
    assert await drone_inbox.wait_for(2) == bodies("high", "low")
    assert await events_inbox.wait_for(2) == bodies("event-1", "event-2")


async def test_broker_closing_waits_for_running_handlers(
    make_broker: BrokerFactory, unique_queues: Queues
) -> None:
    queue = unique_queues.drone_events
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[bytes] = []

    async def handler(delivery: Delivery) -> None:
        started.set()
        await release.wait()
        finished.append(delivery.body)

    context = make_broker()
    broker = await context.__aenter__()
    await broker.consume(queue, handler, prefetch=1)
    await broker.publish(queue, b"in-flight")
    await asyncio.wait_for(started.wait(), TIMEOUT_S)

    closing = asyncio.create_task(context.__aexit__(None, None, None))
    release.set()
    await asyncio.wait_for(closing, TIMEOUT_S)

    assert finished == [b"in-flight"]
    if broker.durable:  # and it was acked, not left for redelivery
        async with make_broker() as reopened:
            assert await reopened.queue_depth(queue) == 0


async def test_broker_publish_after_close_raises_broker_unavailable(
    make_broker: BrokerFactory, unique_queues: Queues
) -> None:
    async with make_broker() as broker:
        pass

    with pytest.raises(BrokerUnavailable):
        await broker.publish(unique_queues.drone_events, b"too late")


async def test_broker_durable_only_for_rabbitmq(broker: Broker) -> None:
    assert broker.durable is isinstance(broker, RabbitMQBroker)


# --- topics ------------------------------------------------------------------------------


async def test_broker_broadcast_reaches_every_current_subscriber(
    broker: Broker, unique_queues: Queues
) -> None:
    topic = unique_queues.control
    await broker.broadcast(topic, b"before anyone listened")  # kept for nobody
    first, second = Inbox(), Inbox()
    await broker.subscribe(topic, first.hear)
    await broker.subscribe(topic, second.hear)

    await broker.broadcast(topic, b"news")

    assert await first.wait_for(1) == [b"news"]
    assert await second.wait_for(1) == [b"news"]


async def test_broker_cancelled_subscription_hears_nothing(
    broker: Broker, unique_queues: Queues
) -> None:
    topic = unique_queues.control
    gone, staying = Inbox(), Inbox()
    subscription = await broker.subscribe(topic, gone.hear)
    await broker.subscribe(topic, staying.hear)

    await subscription.cancel()
    await subscription.cancel()
    await broker.broadcast(topic, b"news")

    assert await staying.wait_for(1) == [b"news"]
    assert gone.items == []


# --- RabbitMQ only -----------------------------------------------------------------------


async def test_rabbitmq_unreachable_server_raises_broker_unavailable(
    unique_queues: Queues,
) -> None:
    broker = RabbitMQBroker("amqp://guest:guest@127.0.0.1:1/", unique_queues)
    with pytest.raises(BrokerUnavailable):
        async with broker:
            pass


@pytest.mark.rabbitmq
async def test_rabbitmq_thousands_of_consumers_share_a_few_channels(
    rabbitmq_url: str, unique_queues: Queues
) -> None:
    # Given 3,000 consumers with prefetch 1 on one connection (RabbitMQ allows 2,047 channels
    # per connection, so one channel per consumer would fail). They share 30 queues: 3,000
    # durable queues would make every later RabbitMQ restart in this vhost slow.
    consumers_per_queue, queue_count = 100, 30
    queues = [unique_queues.drone(f"d{i}") for i in range(queue_count)]
    busy: set[int] = set()
    all_busy = asyncio.Event()
    inbox = Inbox()

    def handler_for(consumer: int) -> Handler:
        async def handler(delivery: Delivery) -> None:
            busy.add(consumer)
            if len(busy) == consumers_per_queue * queue_count:
                all_busy.set()
            # Every handler holds its message until all consumers hold one: with prefetch 1
            # each, that only happens if every consumer works and keeps its own prefetch.
            await all_busy.wait()
            inbox.put(delivery.body)

        return handler

    async with RabbitMQBroker(rabbitmq_url, unique_queues, timeout_s=60) as broker:
        await asyncio.gather(
            *(
                broker.consume(queue, handler_for(q * consumers_per_queue + c), prefetch=1)
                for q, queue in enumerate(queues)
                for c in range(consumers_per_queue)
            )
        )

        # When every queue gets one message per consumer
        await broker.publish_many(
            [Outgoing(queue, queue.name.encode()) for queue in queues] * consumers_per_queue
        )

        # Then each consumer holds one at the same time, and all are handled
        await asyncio.wait_for(all_busy.wait(), 60)
        received = await inbox.wait_for(consumers_per_queue * queue_count, timeout_s=60)
        assert sorted(received) == sorted([q.name.encode() for q in queues] * consumers_per_queue)


@pytest.mark.rabbitmq
async def test_rabbitmq_reattached_consumer_and_listener_keep_receiving_once(
    rabbitmq_url: str, unique_queues: Queues
) -> None:
    # What the watchdog does to a consumer or listener it found lost; the restart test below
    # covers the loss itself, and needs a RabbitMQ that may be stopped.
    queue, topic = unique_queues.drone("d1"), unique_queues.control
    inbox, heard = Inbox(), Inbox()
    async with RabbitMQBroker(rabbitmq_url, unique_queues) as broker:
        # Given a consumer and a listener that each re-attached
        consumer = await broker.consume(queue, inbox.take, prefetch=1)
        subscription = await broker.subscribe(topic, heard.hear)
        await consumer.reattach()
        await subscription.reattach()
        assert await consumer.is_attached()
        assert await subscription.is_attached()

        # When a message and a broadcast follow
        await broker.publish_many([Outgoing(queue, b"m1"), Outgoing(queue, b"m2")])
        await broker.broadcast(topic, b"b1")

        # Then each arrives once, through the new registration only
        assert await inbox.wait_for(2) == bodies("m1", "m2")
        assert await heard.wait_for(1) == bodies("b1")
        await consumer.cancel()
        await subscription.cancel()
        assert not await consumer.is_attached()
        assert await broker.queue_depth(queue) == 0
    assert inbox.items == bodies("m1", "m2")
    assert heard.items == bodies("b1")


@pytest.mark.rabbitmq
@pytest.mark.parametrize("settled_by", ["adapter", "handler"])
async def test_rabbitmq_a_settle_that_never_completes_does_not_stop_its_consumer(
    rabbitmq_url: str,
    unique_queues: Queues,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    settled_by: str,
) -> None:
    # aiormq can leave the ack of a delivery from a channel lost in a RabbitMQ restart waiting
    # forever (the fault suite caught it): no restart makes that happen on cue, so the real
    # broker delivers and the first settle is made to never complete.
    method = "basic_ack" if settled_by == "adapter" else "basic_reject"
    real_settle = getattr(aiormq.Channel, method)
    stuck: list[int] = []

    async def settle_stuck_once(channel: aiormq.Channel, tag: int, **kwargs: bool) -> None:
        if not stuck:
            stuck.append(tag)
            await asyncio.Event().wait()
        await real_settle(channel, tag, **kwargs)

    monkeypatch.setattr(aiormq.Channel, method, settle_stuck_once)
    queue = unique_queues.drone("d1")
    inbox = Inbox()

    async def handle(delivery: Delivery) -> None:
        inbox.put(delivery.body)
        if settled_by == "handler":
            with suppress(BrokerUnavailable):
                await delivery.reject(requeue=False)

    async with RabbitMQBroker(rabbitmq_url, unique_queues, timeout_s=0.5) as broker:
        # Given a consumer with one prefetch slot whose first settle never completes
        consumer = await broker.consume(queue, handle, prefetch=1)
        await broker.publish(queue, b"m1")
        assert await inbox.wait_for(1) == bodies("m1")

        # When the watchdog re-attaches it, as after the restart, and a message follows
        await consumer.reattach()
        await broker.publish(queue, b"m2")

        # Then the stuck settle gave its slot back, and the message is handled
        assert await inbox.wait_for(2) == bodies("m1", "m2")
        assert len(stuck) == 1
        await consumer.cancel()
    if settled_by == "adapter":  # the handler's own settle raises BrokerUnavailable instead
        assert "gave up settling a message after 0.5 s" in caplog.text


@pytest.mark.rabbitmq
@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl")
async def test_rabbitmq_a_listener_queue_left_without_its_consumer_is_deleted(
    rabbitmq_url: str, unique_queues: Queues
) -> None:
    # After a RabbitMQ restart, a late restore of a topic channel the watchdog had given up on
    # redeclared its listener queue without the consumer, and broadcasts piled up in it.
    topic = unique_queues.control
    heard = Inbox()
    async with RabbitMQBroker(rabbitmq_url, unique_queues, orphan_listener_expiry_s=1.5) as broker:
        live = await broker.subscribe(topic, heard.hear)
        orphan = await broker.subscribe(topic, Inbox().hear)
        listening = orphan._listening
        assert listening is not None
        # Given a listener queue given up on (its delete failed on the dead channel; here it
        # succeeds) and then redeclared and bound by a late restore, without its consumer
        await orphan.cancel()
        await listening.queue.restore()  # type: ignore[attr-defined]  # a RobustQueue's
        assert await _exclusive_queue_exists(rabbitmq_url, listening.queue.name)

        # Then RabbitMQ deletes it (asked with rabbitmqctl: a declare would renew its lease)
        async with asyncio.timeout(TIMEOUT_S):
            while listening.queue.name in await _queue_names(rabbitmq_url):  # noqa: ASYNC110
                await asyncio.sleep(0.1)  # RabbitMQ sends no event for it

        # while a listener with its consumer, older than the expiry, still hears broadcasts
        await broker.broadcast(topic, b"b1")
        assert await heard.wait_for(1) == bodies("b1")
        assert await live.is_attached()


async def _queue_names(url: str) -> list[str]:
    vhost = unquote(urlsplit(url).path[1:]) or "/"
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "list_queues", "-q", "-p", vhost, "name", stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await process.communicate()
    assert process.returncode == 0
    return stdout.decode().split()


async def _exclusive_queue_exists(url: str, name: str) -> bool:
    """Asked from another connection: an exclusive queue that exists is locked to it."""
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        try:
            await channel.declare_queue(name, passive=True)
        except aiormq.exceptions.ChannelLockedResource:
            return True
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return False
    raise AssertionError(f"another connection could declare the exclusive queue {name}")


async def _rabbitmqctl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {stderr.decode()}")


@pytest.mark.rabbitmq
@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl")
async def test_rabbitmq_consumers_and_subscriptions_resume_after_restart(
    rabbitmq_url: str, unique_queues: Queues
) -> None:
    queue = unique_queues.drone("d1")
    topic = unique_queues.control
    inbox, heard = Inbox(), Inbox()
    async with RabbitMQBroker(rabbitmq_url, unique_queues, reconnect_interval_s=0.5) as broker:
        # Given a consumer and a subscriber that work
        await broker.consume(queue, inbox.take, prefetch=1)
        await broker.subscribe(topic, heard.hear)
        await broker.publish(queue, b"before")
        await broker.broadcast(topic, b"before")
        await inbox.wait_for(1)
        await heard.wait_for(1)

        # When RabbitMQ restarts (kept short: other test runs may share this server)
        try:
            await _rabbitmqctl("stop_app")
        finally:
            await _rabbitmqctl("start_app")
            await _rabbitmqctl("await_startup", "--timeout", "60")

        # Then a message published after recovery reaches the same consumer
        async with asyncio.timeout(60):
            while True:
                try:
                    await broker.publish(queue, b"after")
                    break
                except BrokerUnavailable:
                    await asyncio.sleep(0.2)  # the publisher channel is still reconnecting
        assert await inbox.wait_for(2, timeout_s=60) == bodies("before", "after")

        # And the subscriber hears broadcasts again once its queue is redeclared; broadcasts
        # sent before that are lost by design, so keep sending until one arrives.
        async with asyncio.timeout(60):
            while len(heard.items) < 2:
                with suppress(BrokerUnavailable):
                    await broker.broadcast(topic, b"after")
                with suppress(TimeoutError):
                    await heard.wait_for(2, timeout_s=0.5)
        assert heard.items[1] == b"after"
