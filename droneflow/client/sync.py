"""SyncAppClient: AppClient for scripts without asyncio. It runs an AppClient on an event loop
in a background thread and waits for each call."""

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from types import TracebackType
from typing import Any, Self, TypeVar

from droneflow.client.app import AppClient
from droneflow.client.handles import TaskHandle, TaskResult, TaskUpdate
from droneflow.client.link import Backoff

T = TypeVar("T")


class SyncTaskHandle:
    def __init__(self, handle: TaskHandle, client: "SyncAppClient") -> None:
        self._handle = handle
        self._client = client
        self.task_id = handle.task_id

    @property
    def status(self) -> str | None:
        return self._handle.status

    def updates(self) -> Iterator[TaskUpdate]:
        updates = self._handle.updates()
        while True:
            try:
                yield self._client.call(_next(updates))
            except StopAsyncIteration:
                return

    def result(self, timeout: float | None = 30) -> TaskResult:
        return self._client.call(self._handle.result(timeout))

    def cancel(self) -> bool:
        return self._client.call(self._handle.cancel())


async def _next(updates: AsyncIterator[TaskUpdate]) -> TaskUpdate:
    return await anext(updates)


class SyncAppClient:
    """`with SyncAppClient(url, app_id="App001") as app: app.submit(...).result()`"""

    def __init__(
        self, url: str, app_id: str, token: str | None = None, *, backoff: Backoff | None = None
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="droneflow-client", daemon=True
        )
        self._arguments = (url, app_id, token, backoff)
        self._client: AppClient | None = None

    def __enter__(self) -> Self:
        self._thread.start()
        url, app_id, token, backoff = self._arguments
        try:
            self._client = self.call(self._enter(AppClient(url, app_id, token, backoff=backoff)))
        except BaseException:
            self._stop_loop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._client is not None:
                self.call(self._client.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    @staticmethod
    async def _enter(client: AppClient) -> AppClient:
        return await client.__aenter__()

    @property
    def app(self) -> AppClient:
        if self._client is None:
            raise RuntimeError("use SyncAppClient in a with block")
        return self._client

    def call(self, work: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the client's loop and wait for its outcome."""
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def submit(self, *args: Any, **task: Any) -> SyncTaskHandle:
        """The arguments of AppClient.submit."""
        return SyncTaskHandle(self.call(self.app.submit(*args, **task)), self)

    def watch(self, task_id: str) -> SyncTaskHandle:
        return SyncTaskHandle(self.call(self.app.watch(task_id)), self)

    def cancel(self, task_id: str) -> bool:
        return self.call(self.app.cancel(task_id))

    def get_task(self, task_id: str) -> dict[str, Any]:
        return self.call(self.app.get_task(task_id))

    def get_result(self, task_id: str) -> dict[str, Any] | None:
        return self.call(self.app.get_result(task_id))
