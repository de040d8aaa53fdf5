"""A result writer on a broker that keeps nothing over a restart (`serve`'s in-memory one)
re-sends at start-up every final state no application was sent. When the store is away then
(cut just as `serve` starts), it tries again until the store is back, rather than end the
service with the store's error."""

import asyncio
import logging
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import orjson
import pytest

from result_writer.service import ResultWriter
from shared.broker import Delivery
from shared.broker.memory import InMemoryBroker
from shared.settings import Settings
from shared.store.mongo import MongoTaskStore
from tests.builders import APP, create, result_for
from tests.tcp_proxy import LateTcpProxy

DEFERRED = "re-sending final states deferred"


class Deferrals(logging.Handler):
    """Counts the writer's deferred attempts as they are logged, on the test's own loop."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(DEFERRED):
            self.count += 1
            self.changed.set()

    async def at_least(self, attempts: int) -> None:
        while self.count < attempts:
            self.changed.clear()
            await self.changed.wait()


@pytest.fixture
def deferrals() -> Iterator[Deferrals]:
    handler = Deferrals()
    logger = logging.getLogger("shared.health")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.mark.mongodb
async def test_result_writer_waits_out_a_store_away_at_start_up_then_resends(
    mongodb_url: str, deferrals: Deferrals
) -> None:
    target = urlsplit(mongodb_url)
    assert target.hostname is not None and target.port is not None
    settings = Settings(queue_prefix=f"t{uuid.uuid4().hex[:6]}", sweep_interval_s=0.1)
    queues = settings.queues
    database = f"droneflow_writer_{uuid.uuid4().hex[:8]}"
    async with LateTcpProxy(target.hostname, target.port) as proxy:
        proxy.open()
        url = f"mongodb://127.0.0.1:{proxy.port}/?directConnection=true"
        async with (
            InMemoryBroker(queues) as broker,
            MongoTaskStore(url, database=database, timeout_s=0.5) as store,
        ):
            try:
                # Given a task that ended before a restart, its final state never sent
                task = await create(store)
                await store.claim(task.task_id, task.drone_id)
                await store.save_result(result_for(task.task_id))

                # When the result writer starts while the store is unreachable
                proxy.cut()
                stop = asyncio.Event()
                running = asyncio.create_task(ResultWriter(settings, broker, store).run(stop))
                async with asyncio.timeout(20):
                    await deferrals.at_least(2)
                assert not running.done()

                # Then once the store is back, the same writer re-sends the final state
                proxy.open()
                received: asyncio.Future[dict[str, object]] = asyncio.Future()

                async def on_frame(delivery: Delivery) -> None:
                    if not received.done():
                        received.set_result(orjson.loads(delivery.body))

                subscription = await broker.consume(queues.app(APP), on_frame, prefetch=1)
                frame = await asyncio.wait_for(received, 20)
                await subscription.cancel()
                assert frame["type"] == "processing_result_received"
                assert frame["task_id"] == task.task_id

                stop.set()
                await asyncio.wait_for(running, 10)
            finally:
                proxy.open()
                await store.drop_database()
