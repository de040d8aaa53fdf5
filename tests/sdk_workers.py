"""Helpers for the SDK's end-to-end tests: workers running in the test's loop, and drone
handlers the tests steer."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from droneflow.client import Backoff, DroneWorker, Task

STOP_TIMEOUT_S = 20.0


def fast_backoff() -> Backoff:
    return Backoff(initial_s=0.05, max_s=0.5)


@asynccontextmanager
async def running(worker: DroneWorker) -> AsyncIterator[asyncio.Task[None]]:
    """The worker serves inside the block; leaving it stops the worker and raises its error."""
    task = asyncio.create_task(worker.run(handle_signals=False))
    try:
        yield task
    finally:
        worker.stop()
        await asyncio.wait_for(task, STOP_TIMEOUT_S)


class Gate:
    """A handler that reports progress, then waits for the test to open the gate."""

    def __init__(self) -> None:
        self.started: asyncio.Queue[Task] = asyncio.Queue()
        self.opened = asyncio.Event()
        self.runs: list[str] = []
        self.cancelled: asyncio.Queue[str] = asyncio.Queue()

    async def __call__(self, task: Task) -> dict[str, Any]:
        self.runs.append(task.task_id)
        await task.progress(50)
        await self.started.put(task)
        try:
            await self.opened.wait()
        except asyncio.CancelledError:
            self.cancelled.put_nowait(task.task_id)
            raise
        return {"echo": task.input_data, "attempt": task.attempt}
