"""SQLiteTaskStore's inline batches (`inline_max`, as `serve` runs it): a small batch runs on the
event loop's thread only while the worker thread has nothing, so the connection is never used
by two threads at once and batches commit in the order they were made."""

import asyncio
import sqlite3
import threading
from pathlib import Path

from shared.store.sqlite import SQLiteTaskStore
from tests.builders import DRONE, create, result_for


def _thread_and_order(
    connection: sqlite3.Connection, now: str, log: list[str], name: str
) -> tuple[int, int]:
    log.append(name)
    return threading.get_ident(), len(log)


def _hold(connection: sqlite3.Connection, now: str, gate: threading.Event) -> int:
    gate.wait(5)
    return threading.get_ident()


async def test_a_lone_call_runs_on_the_loop_thread_and_a_larger_batch_on_the_worker(
    tmp_path: Path,
) -> None:
    log: list[str] = []
    async with SQLiteTaskStore(tmp_path / "db.sqlite", inline_max=2) as store:
        lone_thread, _ = await store._write(_thread_and_order, log, "lone")
        batch = await asyncio.gather(
            *(store._write(_thread_and_order, log, f"batch {n}") for n in range(3))
        )

    assert lone_thread == threading.get_ident()
    assert {thread for thread, _ in batch} != {threading.get_ident()}
    assert log == ["lone", "batch 0", "batch 1", "batch 2"]


async def test_a_small_batch_waits_for_the_worker_batch_made_before_it(tmp_path: Path) -> None:
    log: list[str] = []
    gate = threading.Event()
    async with SQLiteTaskStore(tmp_path / "db.sqlite", inline_max=1) as store:
        # Two calls: more than inline_max, so the worker runs them and stops at the gate.
        held = asyncio.gather(
            store._write(_hold, gate), store._write(_thread_and_order, log, "first")
        )
        await asyncio.sleep(0)  # the next loop iteration hands them off
        later = store._write(_thread_and_order, log, "later")
        await asyncio.sleep(0)
        gate.set()
        worker_thread, _ = await held
        later_thread, _ = await later
        after_thread, _ = await store._write(_thread_and_order, log, "after")

    assert log == ["first", "later", "after"]
    assert later_thread == worker_thread != threading.get_ident()
    assert after_thread == threading.get_ident()  # the worker is idle again


async def test_inline_writes_are_durable_and_visible_to_another_store(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    async with SQLiteTaskStore(path, inline_max=16) as store:
        task = await create(store)
        await store.claim(task.task_id, DRONE)
        outcome = await store.save_result(result_for(task.task_id))

    async with SQLiteTaskStore(path) as reopened:
        assert await reopened.get_task(task.task_id) == outcome.task
