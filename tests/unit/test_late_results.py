"""A drone's result for a task that has already ended needs nothing from the broker: it is
acknowledged, so a drone whose result crossed a cancel is not asked to retry during an outage."""

from pathlib import Path
from typing import Any

import pytest

from gateway.connections import DroneSession, Registry
from gateway.deps import GatewayState
from gateway.routes.ws import _report_result
from shared.broker.memory import InMemoryBroker
from shared.errors import BrokerUnavailable
from shared.settings import Settings
from shared.store.sqlite import SQLiteTaskStore
from tests.builders import a_new_task
from tests.e2e.clients import result_message


class SilentSocket:
    async def send_text(self, text: str) -> None:
        pass


async def test_result_after_cancel_is_acknowledged_while_the_broker_is_down(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path)
    async with SQLiteTaskStore(tmp_path / "db.sqlite") as store:
        broker = InMemoryBroker(settings.queues)
        registry = Registry(broker, store, settings.queues, prefetch=8)
        state = GatewayState(settings, broker, store, registry)
        session = DroneSession("D1", SilentSocket(), 1, broker, store, settings.queues)  # type: ignore[arg-type]
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

        def frame(task_id: str) -> dict[str, Any]:
            message: dict[str, Any] = result_message(task_id, "D1")
            return message

        # When the drone reports on the cancelled task, then it is acknowledged (no reply)
        assert await _report_result(state, session, frame(cancelled.task_id)) is None
        # while a live task's result still needs the broker, and says so
        with pytest.raises(BrokerUnavailable):
            await _report_result(state, session, frame(live.task_id))
        after = await store.get_task(cancelled.task_id)
        assert after is not None and after.status == "cancelled"
