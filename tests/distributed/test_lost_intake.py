"""Messages the broker lost are replayed from the store. A task stored by a gateway that died
before publishing it is routed by the dispatcher's sweep, which records no routing on the hot
path: it tells a lost intake message by empty queues. Transient messages lost in a RabbitMQ
restart are re-sent when the dispatcher's connection comes back."""

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
from shared.protocol import task_id_of_envelope
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
        renotify_after_s=0.001,  # the wait before a task without a message is suspected lost
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
    # Only aging needs the routing recorded; without it the hot path writes nothing
    assert (task.dispatched_at is not None) == (routing.settings.aging_interval_s is not None)


async def test_sweep_leaves_tasks_younger_than_the_grace_period(routing: Routing) -> None:
    # Given a task just stored and not published: its gateway may still be publishing it
    await stored_unpublished(routing.store, "D1")

    # When the sweep runs with a grace period that has not passed
    acted = await routing.dispatcher.resend_unrouted(grace_s=3600)

    # Then nothing is re-sent
    assert acted == 0
    assert await routing.broker.queue_depth(routing.settings.queues.intake) == 0


async def test_sweep_waits_while_the_intake_holds_a_backlog(routing: Routing) -> None:
    queues = routing.settings.queues
    # Given a lost task and another task's message still waiting in the intake (no dispatcher)
    await stored_unpublished(routing.store, "D1")
    await routing.broker.publish(queues.intake, b"not yet routed")

    # When the sweep runs
    acted = await routing.dispatcher.resend_unrouted(grace_s=0)

    # Then it re-sends nothing: a backlog is not a lost message
    assert acted == 0
    assert await routing.broker.queue_depth(queues.intake) == 1


async def test_sweep_without_aging_routes_only_tasks_of_drones_with_empty_queues(
    routing: Routing,
) -> None:
    if routing.settings.aging_interval_s is not None:
        pytest.skip("with aging the store records routing, so queue depths are not consulted")
    queues = routing.settings.queues
    # Given D1's queue holding a message (an offline drone) and D2's empty, each with a lost task
    await stored_unpublished(routing.store, "D1")
    lost = await stored_unpublished(routing.store, "D2")
    await routing.broker.publish(queues.drone("D1"), b"waiting for D1")

    # When the sweep runs past the grace period
    acted = await routing.dispatcher.resend_unrouted(grace_s=0)

    # Then only D2's task is re-sent; D1's is found once its drone has drained its queue
    assert acted == 1
    assert await routing.broker.queue_depth(queues.intake) == 1
    received: list[bytes] = []
    got = asyncio.Event()

    async def take(delivery: Delivery) -> None:
        received.append(delivery.body)
        got.set()

    subscription = await routing.broker.consume(queues.intake, take, prefetch=1)
    try:
        await asyncio.wait_for(got.wait(), WAIT_S)
    finally:
        await subscription.cancel()
    assert task_id_of_envelope(received[0]) == lost


async def test_reconnect_reroutes_waiting_tasks_and_resends_final_states(
    routing: Routing,
) -> None:
    queues = routing.settings.queues
    store = routing.store
    stop = asyncio.Event()
    assert await routing.dispatcher.recover_until_done(stop)  # what `run` would do first
    # Given a task routed before RabbitMQ restarted, its transient message gone with the node,
    waiting = await stored_unpublished(store, "D1")
    await store.mark_dispatched(waiting)
    # and a task cancelled whose transient notification was lost the same way
    cancelled = await stored_unpublished(store, "D2")
    await store.cancel(cancelled)
    running = asyncio.create_task(routing.dispatcher.run(stop))
    routed: list[bytes] = []
    notified: list[bytes] = []
    both = asyncio.Event()

    def taker(into: list[bytes]):  # type: ignore[no-untyped-def]
        async def take(delivery: Delivery) -> None:
            into.append(delivery.body)
            if routed and notified:
                both.set()

        return take

    subscriptions = [
        await routing.broker.consume(queues.drone("D1"), taker(routed), prefetch=8),
        await routing.broker.consume(queues.app("A1"), taker(notified), prefetch=8),
    ]
    try:
        # When the broker tells the running dispatcher that its connection is back
        for listener in routing.broker.connection_listeners:
            listener(None)

        # Then the waiting task is routed to its drone again and the final state re-sent
        await asyncio.wait_for(both.wait(), WAIT_S)
    finally:
        stop.set()
        await running
        for subscription in subscriptions:
            await subscription.cancel()
    assert waiting in {task_id_of_envelope(body) for body in routed}
    assert any(cancelled.encode() in body for body in notified)
