"""The presence board writes only what changed since its last write, and all of its entries
when the store may not hold them (its first write, or after a failed one)."""

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from gateway.connections import DroneSession, Registry
from gateway.presence import NOT_WRITTEN, SCAN_SLICE, PresenceBoard
from shared.broker.memory import InMemoryBroker
from shared.broker.queues import Queues
from shared.errors import StoreUnavailable
from shared.settings import Settings
from shared.store import Presence
from shared.store.sqlite import SQLiteTaskStore
from tests.builders import a_new_task
from tests.sockets import RecordingSocket

GATEWAY = "gw-test"
LONG_TTL_S = 60.0


class RecordingStore(SQLiteTaskStore):
    """The SQLite store, noting which session ids each put_presence call wrote."""

    written: list[list[str]]

    async def put_presence(
        self,
        gateway: str,
        entries: Sequence[Presence],
        ttl_s: float,
        *,
        gone: Sequence[str] = (),
        complete: bool = False,
    ) -> None:
        self.written.append(sorted(e.session_id for e in entries))
        await super().put_presence(gateway, entries, ttl_s, gone=gone, complete=complete)


class Gateway:
    def __init__(self, broker: InMemoryBroker, store: RecordingStore, queues: Queues) -> None:
        self.broker, self.store, self.queues = broker, store, queues
        self.board = PresenceBoard(
            Settings(gateway_name=GATEWAY, presence_interval_s=LONG_TTL_S),
            Registry(broker, store, queues, prefetch=8),
            store,
        )

    def drone(self, drone_id: str) -> DroneSession:
        return DroneSession(drone_id, RecordingSocket(), 2, self.broker, self.store, self.queues)

    async def listed(self) -> list[tuple[str, int]]:
        return [(e.client_id, e.held) for e in await self.store.live_presence("drone")]


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    queues = Queues(prefix="t")
    async with (
        InMemoryBroker(queues) as broker,
        RecordingStore(tmp_path / "db.sqlite") as store,
    ):
        store.written = []
        yield Gateway(broker, store, queues)


async def test_board_first_write_forgets_entries_a_predecessor_left(gateway: Gateway) -> None:
    # Given an entry left by a gateway of the same name that died (restarted on the same port)
    stale = Presence(f"{GATEWAY}/Old/1", "drone", "Old", GATEWAY, "2020-01-01", "2020-01-01")
    await gateway.store.put_presence(GATEWAY, [stale], LONG_TTL_S)
    gateway.board.drone_joined(gateway.drone("D1"))

    # When the new board writes for the first time
    await gateway.board.sync()

    # Then only its own drone is listed
    assert await gateway.listed() == [("D1", 0)]


async def test_board_writes_only_changed_entries_and_forgets_left_ones(gateway: Gateway) -> None:
    # Given three drones announced
    board = gateway.board
    sessions = [gateway.drone(f"D{n}") for n in (1, 2, 3)]
    tickets = [board.drone_joined(session) for session in sessions]
    await board.sync()

    # When one takes a task, one leaves and one stays as it was
    task = (await gateway.store.create_task(a_new_task(drone_id="D1"))).task
    sessions[0].held[task.task_id] = task
    board.drone_left(tickets[1])
    await board.sync()

    # Then the next write sends the changed one alone, and the listing shows all the changes
    assert gateway.store.written[-1] == [board.session_id(tickets[0])]
    assert await gateway.listed() == [("D1", 1), ("D3", 0)]


async def test_board_after_a_failed_write_writes_everything(gateway: Gateway) -> None:
    # Given a board whose last write failed (the store's worker was gone)
    board = gateway.board
    board.drone_joined(gateway.drone("D1"))
    await board.sync()
    tickets = [board.drone_joined(gateway.drone("D2"))]
    store = gateway.store
    await store.__aexit__(None, None, None)
    with pytest.raises(StoreUnavailable):
        await board.sync()

    # When the store is back and the board writes again
    await store.__aenter__()
    await board.sync()

    # Then it wrote every entry, not only the one not yet written
    assert len(store.written[-1]) == 2
    assert board.session_id(tickets[0]) in store.written[-1]
    assert await gateway.listed() == [("D1", 0), ("D2", 0)]


async def test_board_forgets_drones_that_leave_while_it_scans(gateway: Gateway) -> None:
    # Given more drones than the board compares between two yields to the loop, not written yet
    board = gateway.board
    tickets = [board.drone_joined(gateway.drone(f"D{n}")) for n in range(SCAN_SLICE + 1)]
    scan = asyncio.create_task(board.sync())
    while True:  # until the scan has noted some of them and yielded
        if any(ticket.written_held != NOT_WRITTEN for ticket in tickets):
            break
        await asyncio.sleep(0)

    # When they all leave while the scan is half done
    for ticket in tickets:
        board.drone_left(ticket)
    await scan
    await board.sync()

    # Then none of them is listed
    assert await gateway.listed() == []


async def test_board_writes_when_a_drone_was_last_seen_as_a_timestamp(gateway: Gateway) -> None:
    # Given a drone announced, that then sends a frame (the socket stamps the ticket)
    board = gateway.board
    ticket = board.drone_joined(gateway.drone("D1"))
    await board.sync()
    ticket.last_seen = 4102444800.25  # 2100-01-01T00:00:00.250Z

    # When the board writes again
    await board.sync()

    # Then that entry alone was written, with the moment as the store's timestamps are
    assert gateway.store.written[-1] == [board.session_id(ticket)]
    [entry] = await gateway.store.live_presence("drone")
    assert entry.last_seen == "2100-01-01T00:00:00.250Z"
