"""The TaskStore contract for presence and queue counts, on every adapter (the `store` fixture).
Kept beside test_store.py, which holds the task contract, so that neither file grows past
reading."""

import asyncio

from shared.clock import now_iso
from shared.store import Presence, TaskStore
from tests.builders import claimed, create

LONG_TTL_S = 60.0


def drone_entry(session_id: str, drone_id: str, **fields: object) -> Presence:
    values: dict[str, object] = {
        "session_id": session_id,
        "kind": "drone",
        "client_id": drone_id,
        "gateway": "gw-a",
        "connected_at": now_iso(),
        "last_seen": now_iso(),
        "capacity": 4,
        "held": 1,
    }
    values.update(fields)
    return Presence(**values)  # type: ignore[arg-type]


async def test_put_presence_lists_entries_of_the_kind_by_client_id(store: TaskStore) -> None:
    b = drone_entry("s-b", "DroneB", gateway="gw-b", capacity=2, held=0)
    a = drone_entry("s-a", "DroneA")
    app = Presence("s-app", "application", "App1", "gw-a", now_iso(), now_iso())

    await store.put_presence([b, a, app], LONG_TTL_S)

    assert await store.live_presence("drone") == [a, b]
    assert await store.live_presence("application") == [app]


async def test_put_presence_replaces_an_entry_by_session_id(store: TaskStore) -> None:
    await store.put_presence([drone_entry("s1", "DroneA", held=0)], LONG_TTL_S)
    later = drone_entry("s1", "DroneA", held=3, last_seen="2099-01-01T00:00:00.000Z")

    await store.put_presence([later], LONG_TTL_S)

    assert await store.live_presence("drone") == [later]


async def test_remove_presence_forgets_only_the_named_sessions(store: TaskStore) -> None:
    # Given the same drone twice (an old connection not yet closed and its replacement)
    old = drone_entry("s-old", "DroneA", connected_at="2020-01-01T00:00:00.000Z")
    new = drone_entry("s-new", "DroneA")
    await store.put_presence([old, new], LONG_TTL_S)

    # When the old one closes
    await store.remove_presence(["s-old", "s-unknown"])

    # Then the replacement stays listed
    assert await store.live_presence("drone") == [new]


async def test_presence_not_renewed_expires(store: TaskStore) -> None:
    # Given a gateway that wrote its entries and then died, and one that keeps writing
    await store.put_presence([drone_entry("s-dead", "DroneA")], 0.05)
    alive = drone_entry("s-alive", "DroneB")

    async with asyncio.timeout(5):
        while True:
            await store.put_presence([alive], LONG_TTL_S)
            listed = await store.live_presence("drone")
            if [entry.session_id for entry in listed] == ["s-alive"]:
                break
            await asyncio.sleep(0.02)  # the dead entry's time to run out

    assert listed == [alive]


async def test_count_queued_counts_pending_tasks_no_drone_holds(store: TaskStore) -> None:
    # Given two waiting tasks and a delivered one for DroneA, one waiting for DroneB
    await create(store, drone_id="DroneA")
    await create(store, drone_id="DroneA")
    await claimed(store, drone_id="DroneA")
    await create(store, drone_id="DroneB")
    cancelled = await create(store, drone_id="DroneB")
    await store.cancel(cancelled.task_id)

    counts = await store.count_queued(["DroneA", "DroneB", "DroneC"])

    assert counts == {"DroneA": 2, "DroneB": 1, "DroneC": 0}
    assert await store.count_queued([]) == {}
