"""The dispatcher after MongoDB restarts. Writes made without the journal (a routing stamp, a
claim) may be lost with mongod, and a task whose stamp was kept and whose claim was lost is
queued and looks routed while no queue holds it. The dispatcher sees the store's new life and
routes every waiting task again."""

import asyncio
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from dispatcher.service import Dispatcher
from shared.broker.rabbitmq import RabbitMQBroker
from shared.errors import StoreUnavailable
from shared.ids import new_task_id
from shared.models import NewTask
from shared.settings import Settings
from shared.store.mongo import MongoTaskStore
from tests.mongod import MongodServer

pytestmark = [pytest.mark.rabbitmq, pytest.mark.mongodb, pytest.mark.timeout(120)]

BACK_TIMEOUT_S = 60.0


async def sweep_once_back(dispatcher: Dispatcher) -> int:
    """The first sweep that reaches the store again."""
    deadline = time.monotonic() + BACK_TIMEOUT_S
    while True:
        try:
            return await dispatcher.sweep(grace_s=0)
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    "dispatcher_restarts", [False, True], ids=["dispatcher-lives", "dispatcher-dies-with-mongod"]
)
async def test_a_task_left_looking_routed_by_a_store_restart_is_routed_again(
    rabbitmq_url: str, mongod: MongodServer, tmp_path: Path, dispatcher_restarts: bool
) -> None:
    settings = Settings(data_dir=tmp_path, queue_prefix=f"t{uuid.uuid4().hex[:10]}")
    queues = settings.queues
    database = f"droneflow_restart_{uuid.uuid4().hex[:8]}"
    url = urlunsplit(urlsplit(mongod.url)._replace(path=f"/{database}"))
    async with (
        RabbitMQBroker(rabbitmq_url, queues, reconnect_interval_s=0.5) as broker,
        MongoTaskStore(url, timeout_s=2.0) as store,
    ):
        dispatcher = Dispatcher(settings, broker, store)
        # Given a task stamped as routed whose message no queue holds, as a claim lost with
        # mongod leaves it (the stamp on disk, the drone's queue consumed)
        task_id = new_task_id()
        await store.create_task(
            NewTask(task_id=task_id, app_id="A1", drone_id="D1", task_type="t", input_data={})
        )
        stamped = await store.mark_dispatched(task_id)
        assert stamped is not None and stamped.dispatched_at is not None
        await asyncio.to_thread(mongod.fsync)
        # and a dispatcher that looked at the store before, and routes nothing for it
        assert await dispatcher.sweep(grace_s=0) == 0
        assert await broker.queue_depth(queues.drone("D1")) == 0

        # When mongod is killed and started again (with the dispatcher, or without it)
        await asyncio.to_thread(mongod.kill9)
        await asyncio.to_thread(mongod.start)
        if dispatcher_restarts:
            dispatcher = Dispatcher(settings, broker, store)
        acted = await sweep_once_back(dispatcher)

        # Then the dispatcher routed the waiting task again, and stamped it anew
        assert await broker.queue_depth(queues.drone("D1")) == 1
        assert (acted, dispatcher.store_replays) == (1, 1)
        task = await store.get_task(task_id)
        assert task is not None and task.delivery == "queued"
        assert task.dispatched_at is not None and task.dispatched_at > stamped.dispatched_at
        # and later sweeps leave it, this dispatcher's and a new one's: the store says which
        # life was routed
        assert await dispatcher.sweep(grace_s=0) == 0
        assert dispatcher.store_replays == 1
        latecomer = Dispatcher(settings, broker, store)
        assert await latecomer.sweep(grace_s=0) == 0
        assert latecomer.store_replays == 0
        assert await broker.queue_depth(queues.drone("D1")) == 1
