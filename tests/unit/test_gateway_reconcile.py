"""A gateway frees a drone's slot from the store's truth when the control broadcast that
should have told it (timeout, cancel) was lost, e.g. sent while the broker restarted."""

import asyncio
from pathlib import Path

from gateway.connections import DroneSession, Registry
from shared.broker.memory import InMemoryBroker
from shared.broker.queues import Queues
from shared.store.sqlite import SQLiteTaskStore
from tests.builders import a_new_task
from tests.sockets import RecordingSocket


async def test_reconcile_drops_a_held_task_the_store_released_without_telling_us(
    tmp_path: Path,
) -> None:
    queues = Queues(prefix="t")
    async with InMemoryBroker(queues) as broker, SQLiteTaskStore(tmp_path / "db.sqlite") as store:
        registry = Registry(broker, store, queues, prefetch=8)
        socket = RecordingSocket()
        session = DroneSession("D1", socket, 1, broker, store, queues)
        registry.drones["D1"] = session
        timed_out, still_running = (
            (await store.create_task(a_new_task(timeout_s=0.05))).task,
            (await store.create_task(a_new_task(timeout_s=0.05))).task,
        )
        # Given two tasks the drone holds, both past their in-progress deadline
        for task in (timed_out, still_running):
            claimed = await store.claim(task.task_id, "D1")
            assert claimed is not None
            session.held[task.task_id] = claimed
        await asyncio.sleep(0.1)  # the behaviour under test is a deadline passing
        # And the dispatcher released one (its broadcast never arrived)
        assert await store.release(timed_out.task_id, "D1", reason="timeout") is not None

        # When the gateway reconciles
        dropped = await registry.reconcile_held()

    # Then only the released task left the drone's slots, and the drone was told
    assert dropped == 1
    assert list(session.held) == [still_running.task_id]
    assert socket.frames == [
        {"type": "task_cancelled", "task_id": timed_out.task_id, "reason": "timeout"}
    ]
