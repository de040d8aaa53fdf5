"""Task and notification messages are transient on RabbitMQ: the dispatcher replays them from the
store when the node really lost them (a restart, whether it saw it or was down meanwhile), and
not after a reconnect to a node that kept them. On a private node: these tests restart it."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dispatcher.service import Dispatcher
from shared.announce import notify_status
from shared.broker.rabbitmq import RabbitMQBroker
from shared.ids import new_task_id
from shared.models import NewTask
from shared.protocol import encode_task_envelope
from shared.settings import Settings
from shared.store.sqlite import SQLiteTaskStore
from tests.rabbitmq_node import RabbitMQNode

pytestmark = [pytest.mark.distributed, pytest.mark.rabbitmq, pytest.mark.timeout(300)]

WAIT_S = 60.0  # a check waits out the node's return, which is slow on a loaded machine


@dataclass
class Setup:
    node: RabbitMQNode
    settings: Settings
    broker: RabbitMQBroker
    store: SQLiteTaskStore

    async def depth(self, *, drone: str | None = None, app: str | None = None) -> int:
        queues = self.settings.queues
        return await self.broker.queue_depth(
            queues.drone(drone) if drone else queues.app(app or "")
        )


@pytest.fixture
async def setup(rabbitmq_node: RabbitMQNode, tmp_path: Path) -> AsyncIterator[Setup]:
    settings = Settings(
        data_dir=tmp_path,
        queue_prefix=f"t{uuid.uuid4().hex[:10]}",
        sweep_interval_s=0.1,
        renotify_after_s=3600,  # only the replay re-sends final states here
    )
    async with (
        RabbitMQBroker(rabbitmq_node.url, settings.queues, reconnect_interval_s=0.2) as broker,
        SQLiteTaskStore(tmp_path / "db.sqlite") as store,
    ):
        yield Setup(rabbitmq_node, settings, broker, store)


@contextlib.asynccontextmanager
async def running(setup: Setup) -> AsyncIterator[Dispatcher]:
    """A dispatcher running as in its service, once it has made its start-up check."""
    dispatcher = Dispatcher(setup.settings, setup.broker, setup.store)
    stop = asyncio.Event()
    run = asyncio.create_task(dispatcher.run(stop))
    try:
        await next_check(dispatcher)
        yield dispatcher
    finally:
        stop.set()
        await run


async def next_check(dispatcher: Dispatcher) -> None:
    """Until the dispatcher has next asked the broker whether it lost messages (and replayed)."""
    dispatcher.broker_checked.clear()
    await asyncio.wait_for(dispatcher.broker_checked.wait(), WAIT_S)


async def in_flight(setup: Setup) -> tuple[str, str]:
    """A task routed to drone D1, its message waiting in the drone's queue, and a task cancelled,
    its final state waiting in app A1's queue: as the services leave them."""
    waiting, cancelled = new_task_id(), new_task_id()
    for task_id in (waiting, cancelled):
        await setup.store.create_task(
            NewTask(task_id=task_id, app_id="A1", drone_id="D1", task_type="t", input_data={})
        )
    task = await setup.store.mark_dispatched(waiting)
    assert task is not None
    envelope = encode_task_envelope(task.task_id, task.drone_id, task.priority)
    await setup.broker.publish(setup.settings.queues.drone("D1"), envelope)
    outcome = await setup.store.cancel(cancelled)
    await notify_status(setup.broker, setup.settings.queues, outcome.task)
    assert (await setup.depth(drone="D1"), await setup.depth(app="A1")) == (1, 1)
    return waiting, cancelled


async def restart(node: RabbitMQNode) -> None:
    try:
        await asyncio.to_thread(node.stop_app)
    finally:
        await asyncio.to_thread(node.start_app)


async def test_a_restart_of_rabbitmq_is_replayed_from_the_store(setup: Setup) -> None:
    async with running(setup) as dispatcher:
        # Given a task waiting in its drone's queue and a final state in its app's queue
        await in_flight(setup)
        replays = dispatcher.replays

        # When RabbitMQ restarts, losing both transient messages
        await restart(setup.node)
        await next_check(dispatcher)

        # Then the dispatcher replays once: each is in its queue again, once
        assert dispatcher.replays == replays + 1
        assert (await setup.depth(drone="D1"), await setup.depth(app="A1")) == (1, 1)


async def test_a_restart_while_no_dispatcher_ran_is_replayed_at_start_up(setup: Setup) -> None:
    async with running(setup):
        await in_flight(setup)
    # Given RabbitMQ restarted while no dispatcher was running
    await restart(setup.node)
    assert (await setup.depth(drone="D1"), await setup.depth(app="A1")) == (0, 0), (
        "the messages should be transient, lost in the restart"
    )

    # When a dispatcher starts, and then another one
    async with running(setup) as first, running(setup) as second:
        pass

    # Then the first replays both messages, and the second finds nothing lost
    assert (first.replays, second.replays) == (1, 0)
    assert (await setup.depth(drone="D1"), await setup.depth(app="A1")) == (1, 1)


async def test_a_reconnect_to_a_node_that_kept_its_messages_replays_nothing(setup: Setup) -> None:
    async with running(setup) as dispatcher:
        # Given a task waiting in its drone's queue and a final state in its app's queue
        await in_flight(setup)
        replays = dispatcher.replays
        reconnected = asyncio.Event()
        setup.broker.connection_listeners.append(
            lambda lost_because: reconnected.set() if lost_because is None else None
        )

        # When RabbitMQ closes the dispatcher's connection, and the dispatcher reconnects
        await asyncio.to_thread(setup.node.ctl, "close_all_connections", "a test's blip")
        await asyncio.wait_for(reconnected.wait(), WAIT_S)
        await next_check(dispatcher)

        # Then it replays nothing: no copies of the messages the node kept
        assert dispatcher.replays == replays
        assert (await setup.depth(drone="D1"), await setup.depth(app="A1")) == (1, 1)
