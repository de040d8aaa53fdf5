"""The Batcher behind MongoTaskStore's joined writes (shared/store/mongo/batching.py): which
calls share a write, in what order, and whose call an error fails."""

import asyncio
from collections.abc import Sequence

import pytest

from shared.store.mongo.batching import MAX_BATCH, Batcher


class Recorder:
    """A write that records its batches and waits until released, like a round trip."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail_with: Exception | None = None

    async def write(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await self.release.wait()
        if self.fail_with is not None:
            error, self.fail_with = self.fail_with, None
            raise error
        return [item * 10 for item in items]


async def test_batcher_sends_a_lone_call_at_once_and_joins_the_ones_that_wait() -> None:
    # Given a write in flight for the first call
    recorder = Recorder()
    batcher = Batcher(recorder.write)
    first = batcher.submit(1)
    await asyncio.sleep(0)
    assert recorder.batches == [[1]]

    # When more calls arrive meanwhile, and the write returns
    later = [batcher.submit(item) for item in (2, 3, 4)]
    recorder.release.set()

    # Then they go together, in the order they came, and each gets its own outcome
    assert await first == 10
    assert [await future for future in later] == [20, 30, 40]
    assert recorder.batches == [[1], [2, 3, 4]]


async def test_batcher_fails_only_the_calls_of_the_failed_write() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder.write)
    recorder.fail_with = ConnectionError("gone")
    first = batcher.submit(1)
    await asyncio.sleep(0)
    second = batcher.submit(2)
    recorder.release.set()

    with pytest.raises(ConnectionError):
        await first
    assert await second == 20
    assert await batcher.submit(3) == 30


async def test_batcher_bounds_a_write_and_keeps_the_rest_for_the_next() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder.write)
    futures = [batcher.submit(item) for item in range(MAX_BATCH + 5)]
    recorder.release.set()

    assert [await future for future in futures] == [item * 10 for item in range(MAX_BATCH + 5)]
    assert [len(batch) for batch in recorder.batches] == [MAX_BATCH, 5]


async def test_batcher_skips_a_cancelled_call_and_answers_the_others() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder.write)
    first = batcher.submit(1)
    await asyncio.sleep(0)
    gone, kept = batcher.submit(2), batcher.submit(3)
    gone.cancel()
    recorder.release.set()

    assert await first == 10
    assert await kept == 30
    assert recorder.batches == [[1], [2, 3]]
