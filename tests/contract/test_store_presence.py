"""The TaskStore contract for presence and queue counts, on every adapter (the `store` fixture).
Kept beside test_store.py, which holds the task contract, so that neither file grows past
reading."""

import asyncio

from shared.clock import now_iso
from shared.store import Presence, TaskStore
from tests.builders import claimed, create

LONG_TTL_S = 60.0
RENEWED_WITHIN_S = 2.0
"""Long enough for a renewal that follows at once, even on a busy machine: an announcement that
expired first may have its entries deleted, as the port allows."""


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


async def expired(store: TaskStore, session_id: str) -> None:
    """Until the entry `session_id`, announced with a short TTL, is no longer listed."""
    async with asyncio.timeout(5):
        while True:
            if session_id not in [e.session_id for e in await store.live_presence("drone")]:
                return
            await asyncio.sleep(0.02)  # the announcement's time to run out


async def test_put_presence_lists_entries_of_the_kind_by_client_id(store: TaskStore) -> None:
    b = drone_entry("s-b", "DroneB", gateway="gw-b", capacity=2, held=0)
    a = drone_entry("s-a", "DroneA")
    app = Presence("s-app", "application", "App1", "gw-a", now_iso(), now_iso())

    await store.put_presence("gw-b", [b], LONG_TTL_S)
    await store.put_presence("gw-a", [a, app], LONG_TTL_S)

    assert await store.live_presence("drone") == [a, b]
    assert await store.live_presence("application") == [app]


async def test_put_presence_replaces_an_entry_by_session_id(store: TaskStore) -> None:
    await store.put_presence("gw-a", [drone_entry("s1", "DroneA", held=0)], LONG_TTL_S)
    later = drone_entry("s1", "DroneA", held=3, last_seen="2099-01-01T00:00:00.000Z")

    await store.put_presence("gw-a", [later], LONG_TTL_S)

    assert await store.live_presence("drone") == [later]


async def test_put_presence_keeps_entries_it_does_not_name(store: TaskStore) -> None:
    # Given two drones announced, then one of them changed
    a, b = drone_entry("s-a", "DroneA"), drone_entry("s-b", "DroneB")
    await store.put_presence("gw-a", [a, b], LONG_TTL_S)
    changed = drone_entry("s-b", "DroneB", held=0)

    # When the gateway writes only the changed one
    await store.put_presence("gw-a", [changed], LONG_TTL_S)

    # Then both are listed
    assert await store.live_presence("drone") == [a, changed]


async def test_put_presence_renews_every_entry_of_the_gateway(store: TaskStore) -> None:
    # Given an entry announced for a short time, and then a gateway that dies, announced for
    # as long: once the dead one's entry expired, the first announcement ran out too
    kept = drone_entry("s-kept", "DroneA")
    await store.put_presence("gw-a", [kept], RENEWED_WITHIN_S)
    dead = drone_entry("s-dead", "DroneB", gateway="gw-dead")
    await store.put_presence("gw-dead", [dead], RENEWED_WITHIN_S)

    # When its gateway renews its announcement without naming it
    await store.put_presence("gw-a", [], LONG_TTL_S)
    await expired(store, "s-dead")

    # Then it is still listed
    assert await store.live_presence("drone") == [kept]


async def test_put_presence_forgets_gone_entries_only(store: TaskStore) -> None:
    # Given the same drone twice (an old connection not yet closed and its replacement)
    old = drone_entry("s-old", "DroneA", connected_at="2020-01-01T00:00:00.000Z")
    new = drone_entry("s-new", "DroneA")
    await store.put_presence("gw-a", [old, new], LONG_TTL_S)

    # When the old one closes
    await store.put_presence("gw-a", [], LONG_TTL_S, gone=["s-old", "s-unknown"])

    # Then the replacement stays listed
    assert await store.live_presence("drone") == [new]


async def test_put_presence_complete_forgets_the_gateways_other_entries(store: TaskStore) -> None:
    # Given entries of two gateways
    other = drone_entry("s-other", "DroneB", gateway="gw-b")
    await store.put_presence("gw-b", [other], LONG_TTL_S)
    await store.put_presence("gw-a", [drone_entry("s-a1", "DroneA")], LONG_TTL_S)
    kept = drone_entry("s-a2", "DroneC")

    # When gw-a (say, restarted under the same name) writes all of its entries
    await store.put_presence("gw-a", [kept], LONG_TTL_S, complete=True)

    # Then only those are listed for it, and the other gateway's stay
    assert await store.live_presence("drone") == [other, kept]


async def test_put_presence_complete_after_expiry_lists_the_new_entries(
    store: TaskStore,
) -> None:
    # Given a gateway whose announcement expired (it could not reach the store for a while)
    await store.put_presence("gw-a", [drone_entry("s-a1", "DroneA")], 0.05)
    await expired(store, "s-a1")
    back = drone_entry("s-a2", "DroneB")

    # When it writes all of its entries again
    await store.put_presence("gw-a", [back], LONG_TTL_S, complete=True)

    # Then they are listed, and the entry it no longer names is not
    assert await store.live_presence("drone") == [back]


async def test_presence_of_a_gateway_not_renewed_expires(store: TaskStore) -> None:
    # Given a gateway that wrote its entries and then died, and one that keeps writing
    await store.put_presence("gw-dead", [drone_entry("s-dead", "DroneA", gateway="gw-dead")], 0.05)
    alive = drone_entry("s-alive", "DroneB")

    async with asyncio.timeout(5):
        while True:
            await store.put_presence("gw-a", [alive], LONG_TTL_S)
            listed = await store.live_presence("drone")
            if [entry.session_id for entry in listed] == ["s-alive"]:
                break
            await asyncio.sleep(0.02)  # the dead gateway's time to run out

    assert listed == [alive]


async def test_presence_withdrawn_with_a_complete_empty_write(store: TaskStore) -> None:
    # Given a gateway's entries, and another gateway's
    other = drone_entry("s-other", "DroneB", gateway="gw-b")
    await store.put_presence("gw-b", [other], LONG_TTL_S)
    await store.put_presence("gw-a", [drone_entry("s-a", "DroneA")], LONG_TTL_S)

    # When the gateway shuts down: no entries, no time left
    await store.put_presence("gw-a", [], 0.0, complete=True)

    # Then only the other gateway's are listed
    assert await store.live_presence("drone") == [other]


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
