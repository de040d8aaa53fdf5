"""A task stored by a gateway that died before publishing it (its intake message never reached
RabbitMQ) is routed by the dispatcher's sweep, once, and only past the grace period."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dispatcher.service import Dispatcher
from shared.broker import Delivery, Subscription
from shared.broker.rabbitmq import RabbitMQBroker
from shared.ids import new_task_id
from shared.models import NewTask
from shared.settings import Settings
from shared.store.sqlite import SQLiteTaskStore

pytestmark = pytest.mark.rabbitmq

WAIT_S = 10.0


@dataclass
class Routing:
    dispatcher: Dispatcher
    broker: RabbitMQBroker
    store: SQLiteTaskStore
    settings: Settings


@pytest.fixture(params=[None, 3600.0], ids=["aging-off", "aging-on"])
async def routing(
    request: pytest.FixtureRequest, rabbitmq_url: str, tmp_path: Path
) -> AsyncIterator[Routing]:
    settings = Settings(
        data_dir=tmp_path,
        queue_prefix=f"t{uuid.uuid4().hex[:10]}",
        aging_interval_s=request.param,
    )
    async with (
        RabbitMQBroker(rabbitmq_url, settings.queues, reconnect_interval_s=0.5) as broker,
        SQLiteTaskStore(tmp_path / "db.sqlite") as store,
    ):
        yield Routing(Dispatcher(settings, broker, store), broker, store, settings)


async def stored_unpublished(store: SQLiteTaskStore, drone_id: str) -> str:
    """A task as a gateway leaves it when it dies between the store write and the publish."""
    task_id = new_task_id()
    await store.create_task(
        NewTask(task_id=task_id, app_id="A1", drone_id=drone_id, task_type="t", input_data={})
    )
    return task_id


async def routed_by(routing: Routing, routed: asyncio.Event) -> Subscription:
    """The dispatcher consuming the intake; `routed` is set once a message was routed."""

    async def route(delivery: Delivery) -> None:
        await routing.dispatcher.on_intake(delivery)
        routed.set()

    return await routing.broker.consume(routing.settings.queues.intake, route, prefetch=8)


async def test_sweep_routes_a_task_whose_intake_message_was_lost_once(routing: Routing) -> None:
    queues = routing.settings.queues
    # Given a stored task whose intake message never reached RabbitMQ, and a running dispatcher
    task_id = await stored_unpublished(routing.store, "D1")
    routed = asyncio.Event()
    subscription = await routed_by(routing, routed)
    try:
        # When the sweep runs past the grace period, and again once the task was routed
        first = await routing.dispatcher.sweep(grace_s=0)
        await asyncio.wait_for(routed.wait(), WAIT_S)
        second = await routing.dispatcher.sweep(grace_s=0)
    finally:
        await subscription.cancel()

    # Then the task was re-sent once: the second sweep finds it waiting in its drone's queue
    assert (first, second) == (1, 0)
    assert await routing.broker.queue_depth(queues.drone("D1")) == 1
    task = await routing.store.get_task(task_id)
    assert task is not None
    assert task.dispatched_at is not None, "routing is recorded, so the sweep sends it once"


async def test_sweep_leaves_tasks_younger_than_the_grace_period(routing: Routing) -> None:
    # Given a task just stored and not published: its gateway may still be publishing it
    await stored_unpublished(routing.store, "D1")

    # When the sweep runs with a grace period that has not passed
    acted = await routing.dispatcher.sweep(grace_s=3600)

    # Then nothing is re-sent
    assert acted == 0
    assert await routing.broker.queue_depth(routing.settings.queues.intake) == 0


async def test_sweep_waits_while_the_intake_holds_a_backlog(routing: Routing) -> None:
    queues = routing.settings.queues
    # Given a lost task and another task's message still waiting in the intake (no dispatcher)
    await stored_unpublished(routing.store, "D1")
    await routing.broker.publish(queues.intake, b"not yet routed")

    # When the sweep runs
    acted = await routing.dispatcher.sweep(grace_s=0)

    # Then it re-sends nothing: a backlog is not a lost message
    assert acted == 0
    assert await routing.broker.queue_depth(queues.intake) == 1
