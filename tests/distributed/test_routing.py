"""The dispatcher on a durable broker: a routing stamp the store fails to write sends the intake
message back, and the task is routed and stamped when it comes round again."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dispatcher.service import Dispatcher
from shared.announce import enqueue
from shared.broker import Delivery, Subscription
from shared.broker.rabbitmq import RabbitMQBroker
from shared.errors import StoreUnavailable
from shared.ids import new_task_id
from shared.models import NewTask, TaskRecord
from shared.settings import Settings
from shared.store.sqlite import SQLiteTaskStore

pytestmark = pytest.mark.rabbitmq

WAIT_S = 10.0


class GatedStamps(SQLiteTaskStore):
    """The SQLite store, with mark_dispatched failing with StoreUnavailable `failures` times
    first (an outage of the store)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.failures = 0
        self.stamps = 0

    async def mark_dispatched(self, task_id: str) -> TaskRecord | None:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("the store is away")
        self.stamps += 1
        return await super().mark_dispatched(task_id)


@dataclass
class Routing:
    dispatcher: Dispatcher
    broker: RabbitMQBroker
    store: GatedStamps
    settings: Settings


@pytest.fixture
async def routing(rabbitmq_url: str, tmp_path: Path) -> AsyncIterator[Routing]:
    settings = Settings(data_dir=tmp_path, queue_prefix=f"t{uuid.uuid4().hex[:10]}")
    async with (
        RabbitMQBroker(rabbitmq_url, settings.queues, reconnect_interval_s=0.5) as broker,
        GatedStamps(tmp_path / "db.sqlite") as store,
    ):
        yield Routing(Dispatcher(settings, broker, store), broker, store, settings)


async def queued_task(routing: Routing, drone_id: str) -> str:
    """A task stored and published to the intake, as a gateway leaves it."""
    outcome = await routing.store.create_task(
        NewTask(task_id=new_task_id(), app_id="A1", drone_id=drone_id, task_type="t", input_data={})
    )
    await enqueue(routing.broker, routing.settings.queues, outcome.task)
    return outcome.task.task_id


async def dispatching(routing: Routing, settled: asyncio.Queue[bool]) -> Subscription:
    """The dispatcher consuming the intake; `settled` gets whether each handler call succeeded."""

    async def route(delivery: Delivery) -> None:
        try:
            await routing.dispatcher.on_intake(delivery)
        except BaseException:
            settled.put_nowait(False)
            raise
        settled.put_nowait(True)

    return await routing.broker.consume(routing.settings.queues.intake, route, prefetch=8)


async def drone_messages(
    routing: Routing, drone_id: str, got: asyncio.Queue[bytes]
) -> Subscription:
    async def take(delivery: Delivery) -> None:
        got.put_nowait(delivery.body)

    return await routing.broker.consume(routing.settings.queues.drone(drone_id), take, prefetch=8)


async def test_a_failed_stamp_routes_the_task_again_and_stamps_it(routing: Routing) -> None:
    settled: asyncio.Queue[bool] = asyncio.Queue()
    got: asyncio.Queue[bytes] = asyncio.Queue()
    # Given a queued task and a store that fails the first stamp
    routing.store.failures = 1
    task_id = await queued_task(routing, "D1")
    subscriptions = [await dispatching(routing, settled), await drone_messages(routing, "D1", got)]
    try:
        # When the dispatcher routes it
        outcomes = [await asyncio.wait_for(settled.get(), WAIT_S) for _ in range(2)]
        body = await asyncio.wait_for(got.get(), WAIT_S)
    finally:
        for subscription in subscriptions:
            await subscription.cancel()

    # Then the intake message came back after the failure, was routed again, and the task is
    # stamped (the drone may have got it twice: its claim succeeds once)
    assert outcomes == [False, True]
    assert task_id.encode() in body
    assert routing.store.stamps == 1
    task = await routing.store.get_task(task_id)
    assert task is not None
    assert task.dispatched_at is not None
