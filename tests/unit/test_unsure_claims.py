"""A claim the store wrote but failed to answer (MongoDB killed mid-write) leaves a task
delivered to a drone that never got it; the session sends it once the store answers."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.connections import DroneSession
from shared.broker.memory import InMemoryBroker
from shared.clock import now_iso
from shared.settings import Settings
from shared.store.sqlite import SQLiteTaskStore
from tests.builders import a_new_task
from tests.sockets import RecordingSocket


@dataclass
class Drone:
    store: SQLiteTaskStore
    socket: RecordingSocket
    session: DroneSession


@pytest.fixture
async def drone(tmp_path: Path) -> AsyncIterator[Drone]:
    """Drone D1's session with one slot, on a real store and broker."""
    settings = Settings(data_dir=tmp_path)
    async with (
        SQLiteTaskStore(tmp_path / "db.sqlite") as store,
        InMemoryBroker(settings.queues) as broker,
    ):
        socket = RecordingSocket()
        yield Drone(store, socket, DroneSession("D1", socket, 1, broker, store, settings.queues))


async def test_a_claim_stored_without_an_answer_is_sent_to_the_drone(drone: Drone) -> None:
    store, socket, session = drone.store, drone.socket, drone.session
    new = a_new_task()
    task = (await store.create_task(new)).task
    # Given a claim that was written, while the session saw it fail
    assert await store.claim(task.task_id, task.drone_id) is not None
    session.unsure_claims[task.task_id] = now_iso()
    # When the store answers again
    await session.settle_unsure_claims()
    # Then the drone is sent the task it holds, at the attempt the claim counted
    after = await store.get_task(task.task_id)
    assert after is not None and after.delivery == "delivered"
    assert [(f["type"], f["task_id"], f["attempt"]) for f in socket.frames] == [
        ("processing_task", task.task_id, 1)
    ]
    assert task.task_id in session.held
    assert session.unsure_claims == {}


async def test_a_task_delivered_after_the_failed_claim_is_left_alone(drone: Drone) -> None:
    store, socket, session = drone.store, drone.socket, drone.session
    task = (await store.create_task(a_new_task())).task
    # Given a failed claim, and a later delivery (another session of the drone)
    session.unsure_claims[task.task_id] = "2000-01-01T00:00:00.000Z"
    assert await store.claim(task.task_id, task.drone_id) is not None
    # When the session settles it, then the other session keeps the task
    await session.settle_unsure_claims()
    after = await store.get_task(task.task_id)
    assert after is not None and after.delivery == "delivered"
    assert socket.frames == []
