"""Store writes per second of SQLiteTaskStore, as embedded mode makes them.

Each task costs the five writes of its round trip (create_task, mark_dispatched, claim,
save_result, mark_notified), with `--concurrency` tasks in flight at once. The records are
built before the clock starts, so only the store is measured. Prints each run and the median.

    python bench/store_micro.py [--tasks 20000] [--concurrency 200] [--runs 3]
"""

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from shared.clock import now_iso
from shared.ids import new_object_id, new_task_id
from shared.models import NewTask, ResultRecord
from shared.store import TaskStore
from shared.store.sqlite import SQLiteTaskStore

OPS_PER_TASK = 5
DRONES = 50


def workload(tasks: int) -> list[tuple[NewTask, ResultRecord]]:
    pairs = []
    for index in range(tasks):
        task_id = new_task_id()
        drone_id = f"Drone{index % DRONES:03d}"
        new = NewTask(
            task_id=task_id,
            app_id=f"App{index % 10:03d}",
            drone_id=drone_id,
            task_type="image_analysis",
            input_data={"image_url": "https://example.com/image.jpg", "max_objects": 10},
            priority=1 + index % 5,
            timeout_s=3600.0,
        )
        result = ResultRecord(
            result_id=new_object_id(),
            task_id=task_id,
            drone_id=drone_id,
            result_data={"detected_objects": [{"type": "person", "confidence": 0.95}]},
            processing_time=0.01,
            success=True,
            timestamp=now_iso(),
        )
        pairs.append((new, result))
    return pairs


async def drive(
    store: TaskStore, pairs: list[tuple[NewTask, ResultRecord]], concurrency: int
) -> None:
    """Every task's life in the store, `concurrency` tasks at a time; all notified at the end."""
    todo = iter(pairs)

    async def in_flight() -> None:
        for new, result in todo:  # the iterator is shared: each task is taken once
            await store.create_task(new)
            await store.mark_dispatched(new.task_id)
            await store.claim(new.task_id, new.drone_id)
            await store.save_result(result)
            await store.mark_notified([new.task_id])

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(in_flight())
    assert not await store.unnotified(1), "every task should have ended and been notified"


async def run_once(
    path: Path, pairs: list[tuple[NewTask, ResultRecord]], concurrency: int
) -> float:
    async with SQLiteTaskStore(path) as store:
        started = time.perf_counter()
        await drive(store, pairs, concurrency)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    rates = []
    for run in range(1, args.runs + 1):
        pairs = workload(args.tasks)
        with tempfile.TemporaryDirectory(prefix="droneflow-bench-") as folder:
            elapsed = asyncio.run(run_once(Path(folder) / "bench.db", pairs, args.concurrency))
        rate = args.tasks / elapsed
        rates.append(rate)
        print(
            f"run {run}: {args.tasks} tasks in {elapsed:.2f} s = {rate:,.0f} tasks/s,"
            f" {rate * OPS_PER_TASK:,.0f} store ops/s"
        )
    median = statistics.median(rates)
    print(
        f"median of {args.runs}: {median:,.0f} tasks/s, {median * OPS_PER_TASK:,.0f} store ops/s"
        f" ({args.concurrency} tasks in flight)"
    )


if __name__ == "__main__":
    main()
