"""The dispatcher re-sends a final state that was stored but never announced (its publish failed
while the broker was down), and leaves alone one that waits in an offline app's queue. A result
writer started over a broker that lost its queues re-sends every one at once."""

import asyncio
from pathlib import Path

import orjson

from dispatcher.service import Dispatcher
from result_writer.service import ResultWriter
from shared.broker import Delivery
from shared.broker.memory import InMemoryBroker
from shared.ids import new_task_id
from shared.models import NewTask
from shared.settings import Settings
from shared.store.sqlite import SQLiteTaskStore


async def test_renotify_resends_a_lost_final_state_once_per_empty_queue(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, queue_prefix="t", renotify_after_s=0.05)
    queues = settings.queues
    async with InMemoryBroker(queues) as broker, SQLiteTaskStore(tmp_path / "db.sqlite") as store:
        dispatcher = Dispatcher(settings, broker, store)
        new = NewTask(
            task_id=new_task_id(), app_id="A1", drone_id="D1", task_type="t", input_data={}
        )
        await store.create_task(new)
        # Given a task cancelled in the store whose notification was never published
        assert await store.cancel(new.task_id) is not None
        assert await dispatcher.renotify() == 0, "too recent: it may still be on its way"
        await asyncio.sleep(0.1)  # the behaviour under test is a grace period passing

        # When the dispatcher's sweep looks for lost final states, twice
        first = await dispatcher.renotify()
        second = await dispatcher.renotify()

        # Then it was re-sent once: the second time it already waits in the app's queue
        assert (first, second) == (1, 0)
        received: list[dict[str, object]] = []
        got = asyncio.Event()

        async def on_frame(delivery: Delivery) -> None:
            received.append(orjson.loads(delivery.body))
            got.set()

        subscription = await broker.consume(queues.app("A1"), on_frame, prefetch=1)
        await asyncio.wait_for(got.wait(), 5)
        await subscription.cancel()
    assert received[0]["type"] == "task_status_update"
    assert received[0]["status"] == "cancelled"
    assert received[0]["task_id"] == new.task_id


async def test_recovery_resends_every_unsent_final_state_without_a_grace_period(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path, queue_prefix="t")
    queues = settings.queues
    async with InMemoryBroker(queues) as broker, SQLiteTaskStore(tmp_path / "db.sqlite") as store:
        # Given two tasks of one app cancelled just now, whose notifications the broker lost
        for _ in range(2):
            new = NewTask(
                task_id=new_task_id(), app_id="A1", drone_id="D1", task_type="t", input_data={}
            )
            await store.create_task(new)
            await store.cancel(new.task_id)

        # When the result writer starts over the fresh broker
        sent = await ResultWriter(settings, broker, store).recover()

        # Then both wait in the app's queue
        assert sent == 2
        assert await broker.queue_depth(queues.app("A1")) == 2
