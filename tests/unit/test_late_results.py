"""A drone's result for a task that has already ended needs nothing from the broker: it is
acknowledged, so a drone whose result crossed a cancel is not asked to retry during an outage."""

from pathlib import Path

import pytest

from gateway.drones import DroneService
from shared.broker.memory import InMemoryBroker
from shared.errors import BrokerUnavailable
from shared.protocol import DroneResult
from shared.settings import Settings
from shared.store.sqlite import SQLiteTaskStore
from tests.builders import a_new_task
from tests.e2e.clients import result_message


class SilentSocket:
    async def send_text(self, data: str) -> None:
        pass

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        pass


async def test_result_after_cancel_is_acknowledged_while_the_broker_is_down(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path)
    async with SQLiteTaskStore(tmp_path / "db.sqlite") as store:
        broker = InMemoryBroker(settings.queues)
        drones = DroneService(settings, broker, store)
        session = drones.session("D1", SilentSocket(), 1)
        cancelled, live = (
            (await store.create_task(a_new_task())).task,
            (await store.create_task(a_new_task())).task,
        )
        for task in (cancelled, live):
            assert await store.claim(task.task_id, "D1") is not None
        assert await store.cancel(cancelled.task_id) is not None
        # Given a broker that is down
        async with broker:
            pass

        def result(task_id: str) -> DroneResult:
            return DroneResult.model_validate(result_message(task_id, "D1")["data"])

        # When the drone reports on the cancelled task, then it is acknowledged (no error)
        await drones.report_result(session, result(cancelled.task_id))
        # while a live task's result still needs the broker, and says so
        with pytest.raises(BrokerUnavailable):
            await drones.report_result(session, result(live.task_id))
        after = await store.get_task(cancelled.task_id)
        assert after is not None and after.status == "cancelled"
