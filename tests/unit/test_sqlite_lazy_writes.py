"""SQLiteTaskStore's lazy write: mark_notified goes with the next call's batch, or on its own
after LAZY_WRITE_S, and a store that closes commits it first. Only recovery reads
notified_at, so the mark may trail; it must never be lost while the store runs or closes."""

import asyncio
from pathlib import Path

import pytest

from shared.store.sqlite import SQLiteTaskStore
from shared.store.sqlite import store as sqlite_store
from tests.builders import DRONE, create, result_for


async def _finished(store: SQLiteTaskStore) -> str:
    task = await create(store)
    await store.claim(task.task_id, DRONE)
    await store.save_result(result_for(task.task_id))
    return task.task_id


async def test_a_mark_goes_with_the_next_calls_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "LAZY_WRITE_S", 3600.0)  # only another call takes it
    async with SQLiteTaskStore(tmp_path / "db.sqlite") as store:
        task_id = await _finished(store)
        mark = asyncio.ensure_future(store.mark_notified([task_id]))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(mark), 0.2)

        task = await store.get_task(task_id)

        # Settled together, the mark first: the read made after it sees it.
        assert mark.done()
        assert task is not None and task.notified_at is not None


async def test_a_lone_mark_is_written_without_another_call(tmp_path: Path) -> None:
    async with SQLiteTaskStore(tmp_path / "db.sqlite") as store:
        task_id = await _finished(store)
        assert [task.task_id for task, _ in await store.unnotified(10)] == [task_id]

        await store.mark_notified([task_id])

        assert await store.unnotified(10) == []


async def test_a_closing_store_commits_the_mark_it_holds(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    async with SQLiteTaskStore(path) as store:
        task_id = await _finished(store)
        mark = asyncio.ensure_future(store.mark_notified([task_id]))
        await asyncio.sleep(0)

    assert mark.done() and mark.exception() is None
    async with SQLiteTaskStore(path) as reopened:
        assert await reopened.unnotified(10) == []
