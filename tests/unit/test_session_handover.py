"""A drone's older session that closes passes the tasks it held on to the drone's current
session over the control topic: one it claimed after the newer session read the store would
otherwise wait for its in-progress timeout, and cost an attempt."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from starlette.websockets import WebSocketDisconnect

from gateway.connections import DroneSession, Registry
from shared.broker.memory import InMemoryBroker
from shared.broker.queues import Queues
from shared.models import TaskRecord
from shared.protocol import ControlMessage
from shared.store import TaskStore
from shared.store.sqlite import SQLiteTaskStore
from tests.builders import a_new_task
from tests.sockets import RecordingSocket

HANG_GUARD_S = 10.0


class Gateway:
    """A registry fed by the control topic as the gateway's app feeds it; `hints` counts the
    control messages it has handled, so a test can wait for them."""

    def __init__(self, broker: InMemoryBroker, store: TaskStore, queues: Queues) -> None:
        self.broker, self.store, self.queues = broker, store, queues
        self.registry = Registry(broker, store, queues, prefetch=8)
        self.handled = asyncio.Condition()
        self.hints = 0

    async def on_control(self, body: bytes) -> None:
        message = ControlMessage.decode(body)
        await self.registry.on_control(message.kind, message.task_id, message.drone_id)
        async with self.handled:
            self.hints += 1
            self.handled.notify_all()

    async def wait_hints(self, count: int) -> None:
        async with asyncio.timeout(HANG_GUARD_S), self.handled:
            await self.handled.wait_for(lambda: self.hints >= count)

    def session(self, socket: RecordingSocket, capacity: int) -> DroneSession:
        return DroneSession("D1", socket, capacity, self.broker, self.store, self.queues)

    async def claimed(self) -> TaskRecord:
        task = (await self.store.create_task(a_new_task(timeout_s=60.0))).task
        claimed = await self.store.claim(task.task_id, "D1")
        assert claimed is not None
        return claimed


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    queues = Queues(prefix="t")
    async with InMemoryBroker(queues) as broker, SQLiteTaskStore(tmp_path / "db.sqlite") as store:
        gateway = Gateway(broker, store, queues)
        subscription = await broker.subscribe(queues.control, gateway.on_control)
        yield gateway
        await subscription.cancel()


async def test_handover_a_late_claim_of_the_older_session_reaches_the_newer_one(
    gateway: Gateway,
) -> None:
    # Given the drone's newer session, started with nothing held
    old_socket, new_socket = RecordingSocket(), RecordingSocket()
    old = gateway.session(old_socket, capacity=1)
    new = gateway.session(new_socket, capacity=1)
    gateway.registry.drones["D1"] = new
    await new.start()
    # And a task the older session claimed after that
    late = await gateway.claimed()
    old.held[late.task_id] = late

    # When the older session closes
    await old.close()
    await gateway.wait_hints(1)

    # Then the newer session sends the drone that delivery again, and the store is unchanged
    assert new_socket.frames == [
        {**new_socket.frames[0], "task_id": late.task_id, "attempt": 1, "resumed": True}
    ]
    assert list(new.held) == [late.task_id]
    assert await gateway.store.get_task(late.task_id) == late


async def test_handover_waits_for_a_free_slot_of_the_newer_session(gateway: Gateway) -> None:
    # Given a newer session of capacity 1 that resumed the one task it found in the store
    held = await gateway.claimed()
    new_socket = RecordingSocket()
    new = gateway.session(new_socket, capacity=1)
    gateway.registry.drones["D1"] = new
    await new.start()
    # And an older session that closes holding another
    old = gateway.session(RecordingSocket(), capacity=1)
    late = await gateway.claimed()
    old.held[late.task_id] = late
    await old.close()
    await gateway.wait_hints(1)

    # Then the newer session does not exceed its capacity
    assert [f["task_id"] for f in new_socket.frames] == [held.task_id]

    # Until the drone finishes the task it holds
    await new.finished(held.task_id)
    assert [(f["task_id"], f["resumed"]) for f in new_socket.frames] == [
        (held.task_id, True),
        (late.task_id, True),
    ]


class GoneSocket(RecordingSocket):
    """A socket whose drone dropped it before the gateway noticed: closing it fails."""

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        raise WebSocketDisconnect(1006)


async def test_a_newer_session_starts_though_the_older_socket_is_already_gone(
    gateway: Gateway,
) -> None:
    # Given a drone's session whose socket is already gone, holding a task
    await gateway.registry.attach_drone(gateway.session(GoneSocket(), capacity=1))
    task = await gateway.claimed()
    # When the drone's newer connection attaches
    new_socket = RecordingSocket()
    await gateway.registry.attach_drone(gateway.session(new_socket, capacity=1))
    # Then it starts, and is sent the task the drone holds
    assert [(f["type"], f["task_id"]) for f in new_socket.frames] == [
        ("processing_task", task.task_id)
    ]


async def test_concurrent_adoptions_send_no_more_than_the_capacity(gateway: Gateway) -> None:
    # Given a session with one slot, and two tasks the store says the drone holds
    socket = RecordingSocket()
    session = gateway.session(socket, capacity=1)
    first, second = await gateway.claimed(), await gateway.claimed()
    # When both are adopted at once (each sees the free slot before reading the store)
    await asyncio.gather(session.adopt(first.task_id), session.adopt(second.task_id))
    # Then one is sent, and the other waits for the slot
    assert len(socket.frames) == 1
    sent = socket.frames[0]["task_id"]
    await session.finished(sent)
    assert [f["task_id"] for f in socket.frames] == [
        sent,
        ({first.task_id, second.task_id} - {sent}).pop(),
    ]


async def test_a_restart_with_more_held_than_capacity_sends_only_the_capacity(
    gateway: Gateway,
) -> None:
    # Given three tasks the store says the drone holds (results in flight count until stored)
    held = [await gateway.claimed() for _ in range(3)]
    # When a session with two slots starts
    socket = RecordingSocket()
    session = gateway.session(socket, capacity=2)
    await session.start()
    # Then two are sent, resumed, and the third only once a slot is free
    assert [f["resumed"] for f in socket.frames] == [True, True]
    await session.finished(socket.frames[0]["task_id"])
    assert {f["task_id"] for f in socket.frames} == {task.task_id for task in held}
