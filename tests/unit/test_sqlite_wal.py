"""The SQLite store keeps checkpoints off the writer: a thread of its own copies the WAL back,
and the writer's own, rare checkpoint still keeps the WAL bounded under a steady load."""

import asyncio
from pathlib import Path

import pytest

from shared.clock import now_iso
from shared.ids import new_object_id, new_task_id
from shared.models import NewTask, ResultRecord
from shared.store.sqlite import SQLiteTaskStore
from shared.store.sqlite import worker as sqlite_worker

PAGE_BYTES = 4096


async def run_round_trips(store: SQLiteTaskStore, tasks: int, in_flight: int = 50) -> None:
    todo = iter(range(tasks))

    async def worker() -> None:
        for n in todo:
            new = NewTask(
                task_id=new_task_id(),
                app_id="App001",
                drone_id=f"Drone{n % 8}",
                task_type="image_analysis",
                input_data={"n": n, "padding": "x" * 200},
            )
            await store.create_task(new)
            await store.claim(new.task_id, new.drone_id)
            await store.save_result(
                ResultRecord(
                    result_id=new_object_id(),
                    task_id=new.task_id,
                    drone_id=new.drone_id,
                    result_data={"n": n},
                    success=True,
                    timestamp=now_iso(),
                )
            )

    await asyncio.gather(*(worker() for _ in range(in_flight)))


async def test_background_checkpointer_copies_the_wal_while_the_writer_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_worker, "WRITER_CHECKPOINT_PAGES", 1_000_000)
    monkeypatch.setattr(sqlite_worker, "CHECKPOINT_EVERY_JOBS", 100)
    path = tmp_path / "droneflow.db"
    async with SQLiteTaskStore(path) as store:
        database_bytes_before = path.stat().st_size
        await run_round_trips(store, 600)
        # The checkpointer runs on its own thread: wait for its copy to reach the file.
        deadline = asyncio.get_running_loop().time() + 10
        while path.stat().st_size <= database_bytes_before:
            assert asyncio.get_running_loop().time() < deadline, "no checkpoint reached the file"
            await asyncio.sleep(0.05)
        page = await store.list_tasks(
            app_id="App001", status="completed", updated_since=None, limit=1000, cursor=None
        )
        assert len(page.tasks) == 600


async def test_wal_stays_bounded_without_the_checkpointer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_worker, "WRITER_CHECKPOINT_PAGES", 100)
    monkeypatch.setattr(sqlite_worker, "CHECKPOINT_EVERY_JOBS", 10**9)
    monkeypatch.setattr(sqlite_worker, "CHECKPOINT_INTERVAL_S", 3600.0)
    path = tmp_path / "droneflow.db"
    wal = path.with_name(path.name + "-wal")
    async with SQLiteTaskStore(path) as store:
        largest = 0
        for _ in range(10):
            await run_round_trips(store, 200)
            largest = max(largest, wal.stat().st_size)
    # Without the writer's checkpoint these 2,000 round trips write several MB of WAL. A WAL
    # starts over after a checkpoint but keeps its length, so allow a few commits past it.
    assert largest < 100 * PAGE_BYTES * 4, f"WAL grew to {largest} bytes"
