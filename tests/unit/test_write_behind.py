"""WriteBehind: store writes nobody waits for (routing stamps, notifications as sent), many ids
per write, one write in flight, a delay that gathers more, and `flush` that ends it."""

import asyncio
from collections.abc import Sequence

import pytest

from shared.errors import StoreUnavailable
from shared.write_behind import WriteBehind


class Writes:
    """The batches written, in order; `failures` first calls fail as a store away would."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.failures = 0
        self.gate: asyncio.Event | None = None  # when set, a write waits for it
        self.written = asyncio.Event()
        self.called = asyncio.Event()

    async def __call__(self, ids: Sequence[str]) -> None:
        self.called.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("the store is away")
        self.batches.append(list(ids))
        self.written.set()


async def test_ids_added_while_a_write_is_in_flight_go_together_in_the_next() -> None:
    writes = Writes()
    writes.gate = asyncio.Event()
    behind = WriteBehind(writes, "ids")
    # Given a first id whose write is in flight
    behind.add("a")
    await asyncio.sleep(0)  # the writer starts and waits on the gate
    # When more come meanwhile, and the first write ends
    for item in ("b", "c", "d"):
        behind.add(item)
    writes.gate.set()
    await behind.flush()
    # Then the first went alone and the rest in one write
    assert writes.batches == [["a"], ["b", "c", "d"]]


async def test_a_delay_gathers_ids_until_flush_ends_it() -> None:
    writes = Writes()
    behind = WriteBehind(writes, "ids", delay_s=60.0)
    # Given ids added within the delay
    for item in ("a", "b", "c"):
        behind.add(item)
    for _ in range(5):
        await asyncio.sleep(0)
    # Then nothing is written before the delay ends
    assert writes.batches == []
    # When flushed, Then all of them go in one write at once
    await asyncio.wait_for(behind.flush(), 5)
    assert writes.batches == [["a", "b", "c"]]


async def test_enough_waiting_ids_end_the_delay() -> None:
    writes = Writes()
    behind = WriteBehind(writes, "ids", delay_s=60.0, max_pending=3)
    # When as many ids wait as max_pending allows
    for item in ("a", "b", "c"):
        behind.add(item)
    # Then they are written without waiting for the delay or a flush
    await asyncio.wait_for(writes.written.wait(), 5)
    assert writes.batches == [["a", "b", "c"]]


async def test_a_failed_write_drops_its_ids_and_the_next_ones_are_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    writes = Writes()
    writes.failures = 1
    behind = WriteBehind(writes, "routing stamps")
    # Given a write that fails as a store away would
    behind.add("a")
    await behind.flush()
    # When more ids come
    behind.add("b")
    await behind.flush()
    # Then the failed one is given up, with a warning, and the next is written
    assert writes.batches == [["b"]]
    assert "could not record 1 routing stamps" in caplog.text


async def test_flush_waits_for_the_ids_added_before_it_not_for_the_load() -> None:
    writes = Writes()
    writes.gate = asyncio.Event()
    behind = WriteBehind(writes, "ids", delay_s=60.0)
    # Given ids waiting, and a load that keeps adding while their write is in flight
    behind.add("a")
    behind.add("b")
    flushed = asyncio.create_task(behind.flush())
    await asyncio.wait_for(writes.called.wait(), 5)
    behind.add("c")
    # When the write of the first ids ends
    writes.gate.set()
    await asyncio.wait_for(flushed, 5)
    # Then flush returned with them written, and the later id waits for its own write
    assert writes.batches == [["a", "b"]]
    await asyncio.wait_for(behind.flush(), 5)
    assert writes.batches == [["a", "b"], ["c"]]


async def test_discard_drops_what_waits_and_lets_the_write_in_flight_end() -> None:
    writes = Writes()
    writes.gate = asyncio.Event()
    behind = WriteBehind(writes, "ids")
    # Given one write in flight and more ids waiting behind it
    behind.add("a")
    await asyncio.wait_for(writes.called.wait(), 5)
    behind.add("b")
    behind.add("c")
    # When they are discarded, and the write in flight ends
    discarding = asyncio.create_task(behind.discard())
    await asyncio.sleep(0)
    assert not discarding.done()  # it waits for the write in flight
    writes.gate.set()
    await asyncio.wait_for(discarding, 5)
    # Then only the write in flight was made, and ids added later are written as usual
    behind.add("d")
    await asyncio.wait_for(behind.flush(), 5)
    assert writes.batches == [["a"], ["d"]]
