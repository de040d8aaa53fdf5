"""The dispatcher on a durable broker, when the store fails to write a routing stamp. With aging,
the stamp comes first (it reads the task's age): the intake message goes back, and the task is
routed and stamped when it comes round again. Without, the task is routed from its message and
stamped behind: it reaches its drone, and past the grace period the sweep routes it again and
stamps it."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
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
    """The SQLite store, with mark_dispatched and stamp_dispatched failing with StoreUnavailable
    `failures` times first (an outage of the store)."""

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

    async def stamp_dispatched(self, task_ids: Sequence[str]) -> None:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("the store is away")
        self.stamps += len(task_ids)
        await super().stamp_dispatched(task_ids)


@dataclass
class Routing:
    dispatcher: Dispatcher
    broker: RabbitMQBroker
    store: GatedStamps
    settings: Settings


@pytest.fixture
async def routing(
    request: pytest.FixtureRequest, rabbitmq_url: str, tmp_path: Path
) -> AsyncIterator[Routing]:
    aging_interval_s = getattr(request, "param", None)
    settings = Settings(
        data_dir=tmp_path,
        queue_prefix=f"t{uuid.uuid4().hex[:10]}",
        aging_interval_s=aging_interval_s,
    )
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


@contextlib.asynccontextmanager
async def routing_a_task(
    routing: Routing, *, failing_stamps: int
) -> AsyncIterator[tuple[str, asyncio.Queue[bool], asyncio.Queue[bytes]]]:
    """A queued task, with the dispatcher consuming the intake and a consumer of D1's queue:
    yields the task's id, whether each handler call succeeded, and what D1's queue got."""
    settled: asyncio.Queue[bool] = asyncio.Queue()
    got: asyncio.Queue[bytes] = asyncio.Queue()
    routing.store.failures = failing_stamps
    task_id = await queued_task(routing, "D1")
    subscriptions = [await dispatching(routing, settled), await drone_messages(routing, "D1", got)]
    try:
        yield task_id, settled, got
    finally:
        for subscription in subscriptions:
            await subscription.cancel()


@pytest.mark.parametrize("routing", [3600.0], indirect=True, ids=["aging-on"])
async def test_a_failed_stamp_routes_the_task_again_and_stamps_it(routing: Routing) -> None:
    # Given a queued task and a store that fails the first stamp
    async with routing_a_task(routing, failing_stamps=1) as (task_id, settled, got):
        # When the dispatcher routes it
        outcomes = [await asyncio.wait_for(settled.get(), WAIT_S) for _ in range(2)]
        body = await asyncio.wait_for(got.get(), WAIT_S)

    # Then the intake message came back after the failure, was routed again, and the task is
    # stamped (the drone may have got it twice: its claim succeeds once)
    assert outcomes == [False, True]
    assert task_id.encode() in body
    assert routing.store.stamps == 1
    task = await routing.store.get_task(task_id)
    assert task is not None
    assert task.dispatched_at is not None


async def test_a_failed_stamp_behind_the_route_is_repaired_by_the_sweep(routing: Routing) -> None:
    # Given a queued task and a store that fails the first stamp, without aging
    async with routing_a_task(routing, failing_stamps=1) as (task_id, settled, got):
        # When the dispatcher routes it
        first = await asyncio.wait_for(settled.get(), WAIT_S)
        first_copy = await asyncio.wait_for(got.get(), WAIT_S)
        # Then it reached its drone's queue, and its stamp is lost
        assert first
        assert task_id.encode() in first_copy
        await routing.dispatcher.sweep(grace_s=3600)  # writes what stamps are pending
        task = await routing.store.get_task(task_id)
        assert task is not None and task.dispatched_at is None

        # When the sweep runs past the grace period, and again once it was routed
        resent = await routing.dispatcher.sweep(grace_s=0)
        second = await asyncio.wait_for(settled.get(), WAIT_S)
        second_copy = await asyncio.wait_for(got.get(), WAIT_S)
        again = await routing.dispatcher.sweep(grace_s=0)

    # Then it was routed a second time and stamped (the drone's claim succeeds once), and the
    # next sweep leaves it
    assert (resent, second, again) == (1, True, 0)
    assert second_copy == first_copy
    assert routing.store.stamps == 1
    task = await routing.store.get_task(task_id)
    assert task is not None and task.dispatched_at is not None
