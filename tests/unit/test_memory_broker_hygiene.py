"""The in-memory broker forgets a queue once it is empty and unconsumed (a departed drone's), and
keeps every queue that still holds a message, including one a departed consumer hands back."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from shared.broker import Delivery
from shared.broker.memory import InMemoryBroker
from shared.broker.queues import Queues

TIMEOUT_S = 10.0


@pytest.fixture
async def broker() -> AsyncIterator[InMemoryBroker]:
    async with InMemoryBroker(Queues(prefix="t")) as entered:
        yield entered


async def _ignore(delivery: Delivery) -> None:
    pass


async def test_memory_broker_forgets_an_empty_queue_when_its_last_consumer_leaves(
    broker: InMemoryBroker,
) -> None:
    # Given two consumers of a drone's queue, and the queue emptied by them
    queue = Queues(prefix="t").drone("gone")
    first = await broker.consume(queue, _ignore, prefetch=1)
    second = await broker.consume(queue, _ignore, prefetch=1)
    # When one leaves, the queue stays; when the last leaves, it is gone
    await first.cancel()
    assert queue.name in broker.queue_names()
    await second.cancel()
    assert queue.name not in broker.queue_names()
    # Then reading its depth does not declare it again
    assert await broker.queue_depth(queue) == 0
    assert queue.name not in broker.queue_names()


async def test_memory_broker_keeps_a_queue_with_messages_and_no_consumer(
    broker: InMemoryBroker,
) -> None:
    # Given a message for a drone that has gone away
    queue = Queues(prefix="t").drone("away")
    subscription = await broker.consume(queue, _ignore, prefetch=1)
    await subscription.cancel()
    await broker.publish(queue, b"task")
    # Then it waits in its queue for the drone's next consumer
    assert await broker.queue_depth(queue) == 1
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def take(delivery: Delivery) -> None:
        await received.put(delivery.body)

    again = await broker.consume(queue, take, prefetch=1)
    async with asyncio.timeout(TIMEOUT_S):
        assert await received.get() == b"task"
    await again.cancel()
    assert queue.name not in broker.queue_names()


async def test_memory_broker_a_delivery_requeued_after_its_queue_was_forgotten_is_kept(
    broker: InMemoryBroker,
) -> None:
    # Given a consumer holding a delivery, which cancels itself (the drone left) mid-handler
    queue = Queues(prefix="t").drone("flaky")
    held = asyncio.Event()
    release = asyncio.Event()
    handed_back = asyncio.Event()

    async def hold(delivery: Delivery) -> None:
        held.set()
        await release.wait()
        await delivery.reject(requeue=True)
        handed_back.set()

    subscription = await broker.consume(queue, hold, prefetch=1)
    await broker.publish(queue, b"task")
    async with asyncio.timeout(TIMEOUT_S):
        await held.wait()
    await subscription.cancel()
    assert queue.name not in broker.queue_names()  # empty: its one message is being handled
    # When the handler hands the message back
    release.set()
    # Then the queue is declared again with the message in it, redelivered to the next consumer
    async with asyncio.timeout(TIMEOUT_S):
        await handed_back.wait()
    assert await broker.queue_depth(queue) == 1
    received: asyncio.Queue[bool] = asyncio.Queue()

    async def take(delivery: Delivery) -> None:
        await received.put(delivery.redelivered)

    await broker.consume(queue, take, prefetch=1)
    async with asyncio.timeout(TIMEOUT_S):
        assert await received.get() is True
