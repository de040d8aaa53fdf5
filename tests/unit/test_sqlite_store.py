"""What only the SQLite adapter can show, beyond the TaskStore contract it shares with the others
(tests/contract/test_store.py): durability, several stores (and processes) on one file, and
the query plans."""

import asyncio
import contextlib
import sqlite3
import sys
from pathlib import Path

import pytest

from shared.errors import StoreUnavailable, TaskAlreadyFinished
from shared.store.sqlite import SQLiteTaskStore
from shared.store.sqlite.schema import (
    EXPIRE_SQL,
    OVERDUE_SQL,
    PENDING_FOR_DRONE_SQL,
    RESULTS_FOR_DRONE_SQL,
    ROUTED_BEFORE_SQL,
    UNDISPATCHED_SQL,
    UNNOTIFIED_SQL,
    numbered,
)
from tests.builders import DRONE, create, new_task, result_for


async def test_sqlite_store_keeps_its_data_when_reopened(tmp_path: Path) -> None:
    path = tmp_path / "droneflow.db"
    async with SQLiteTaskStore(path) as first:
        task = await create(first)
        result = result_for(task.task_id)
        await first.save_result(result)
        stored = await first.get_task(task.task_id)

    async with SQLiteTaskStore(path) as reopened:
        assert await reopened.get_task(task.task_id) == stored
        assert await reopened.get_result(task.task_id) == result


async def test_sqlite_stores_on_one_file_see_each_others_writes(tmp_path: Path) -> None:
    path = tmp_path / "droneflow.db"
    async with SQLiteTaskStore(path) as first, SQLiteTaskStore(path) as second:
        task = await create(first)
        assert await second.get_task(task.task_id) == task

        delivered = await second.claim(task.task_id, DRONE)

        assert await first.get_task(task.task_id) == delivered


async def test_sqlite_concurrent_claims_from_two_stores_deliver_once(tmp_path: Path) -> None:
    path = tmp_path / "droneflow.db"
    async with SQLiteTaskStore(path) as first, SQLiteTaskStore(path) as second:
        tasks = [await create(first) for _ in range(20)]

        claims = await asyncio.gather(
            *(
                store.claim(task.task_id, DRONE)
                for task in tasks
                for store in (first, second, first, second)
            )
        )

        winners = [claim.task_id for claim in claims if claim is not None]
        assert sorted(winners) == sorted(task.task_id for task in tasks)


_WRITER = """
import asyncio, sys
from pathlib import Path
from typing import Any
from shared.models import NewTask
from shared.store.sqlite import SQLiteTaskStore

async def main():
    async with SQLiteTaskStore(Path(sys.argv[1])) as store:
        for index in range(50):
            await store.create_task(NewTask(
                task_id=f"task_{index:04d}", app_id="App001", drone_id="Drone001",
                task_type="t", input_data={}))

asyncio.run(main())
"""


async def test_sqlite_store_sees_commits_of_another_process(tmp_path: Path) -> None:
    path = tmp_path / "droneflow.db"
    async with SQLiteTaskStore(path) as store:
        writer = await asyncio.create_subprocess_exec(sys.executable, "-c", _WRITER, str(path))
        claims = 0
        while writer.returncode is None:
            # Racing the writer: claims may hit the file while it commits.
            for task in await store.pending_for_drone(DRONE, 100):
                claims += await store.claim(task.task_id, DRONE) is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(writer.wait(), 0.01)

        assert writer.returncode == 0
        for task in await store.pending_for_drone(DRONE, 100):
            claims += await store.claim(task.task_id, DRONE) is not None
        assert claims == 50


async def test_sqlite_store_that_cannot_open_its_file_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "droneflow.db").mkdir()

    with pytest.raises(StoreUnavailable):
        async with SQLiteTaskStore(tmp_path / "droneflow.db"):
            pass


async def test_sqlite_store_refuses_calls_once_closed(tmp_path: Path) -> None:
    async with SQLiteTaskStore(tmp_path / "droneflow.db") as store:
        pass

    with pytest.raises(StoreUnavailable):
        await store.get_task("task_1")


async def test_sqlite_calls_of_one_loop_iteration_run_in_the_order_made(tmp_path: Path) -> None:
    # The calls of one event-loop iteration reach the worker thread as one hand-off.
    async with SQLiteTaskStore(tmp_path / "droneflow.db") as store:
        # Given a task created, claimed, ended and read, without awaiting in between
        new = new_task()
        created, claimed, saved, ended_twice, read = await asyncio.gather(
            store.create_task(new),
            store.claim(new.task_id, new.drone_id),
            store.save_result(result_for(new.task_id, drone_id=new.drone_id)),
            store.save_result(result_for(new.task_id, drone_id=new.drone_id)),
            store.get_task(new.task_id),
            return_exceptions=True,
        )
        # Then each ran after the one before it, and each got its own answer
        assert not isinstance(created, BaseException) and created.created
        assert claimed is not None and not isinstance(claimed, BaseException)
        assert claimed.delivery == "delivered"
        assert not isinstance(saved, BaseException) and saved.task.status == "completed"
        assert isinstance(ended_twice, TaskAlreadyFinished)
        assert read is not None and not isinstance(read, BaseException)
        assert read.status == "completed"


@pytest.mark.parametrize(
    ("sql", "params", "index"),
    [
        (PENDING_FOR_DRONE_SQL, (DRONE, 10), "ix_tasks_drone_pending (drone_id=? AND status=?)"),
        (RESULTS_FOR_DRONE_SQL, (DRONE, 10), "ix_results_drone (drone_id=?)"),
        (UNDISPATCHED_SQL, ("2024-01-01T00:00:00.000Z", 10), "ix_tasks_undispatched"),
        (ROUTED_BEFORE_SQL, ("2024-01-01T00:00:00.000Z", 10), "ix_tasks_routed"),
        (OVERDUE_SQL, ("2024-01-01T00:00:00.000Z", 10), "ix_tasks_overdue"),
        (
            EXPIRE_SQL,
            numbered(None, None, "2024-01-01T00:00:00.000Z", 10),
            "ix_tasks_expire",
        ),
        (UNNOTIFIED_SQL, (10,), "ix_tasks_unnotified"),
    ],
)
async def test_sqlite_hot_queries_use_an_index(
    tmp_path: Path, sql: str, params: tuple[object, ...] | dict[str, object], index: str
) -> None:
    path = tmp_path / "droneflow.db"
    async with SQLiteTaskStore(path):
        pass
    connection = sqlite3.connect(path)
    try:
        plan = [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    finally:
        connection.close()

    assert any(f"USING INDEX {index}" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan
    assert not any(step.startswith("SCAN") and "INDEX" not in step for step in plan), plan
