"""What an application sees of its tasks: one TaskHandle per task, fed by a Tracker.

The server delivers notifications at least once, and after a reconnect the client also reads
them back from the listing endpoint, so the same change can arrive twice. The tracker keeps
that from the caller: a handle records each distinct update once, and nothing after the
final state.
"""

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from droneflow.client.errors import ClientError, TaskFailed
from shared.clock import parse_timestamp
from shared.lifecycle import TERMINAL_STATUSES
from shared.protocol import PROCESSING_RESULT_RECEIVED, TASK_STATUS_UPDATE

UNCLAIMED_TASKS_KEPT: Final = 10_000
"""Tasks whose frames are kept until a handle claims them: a notification may overtake the
reply to the submission, and frames of the app's other clients arrive here too."""
FINISHED_TASKS_KEPT: Final = 10_000
"""Finished handles remembered, so that a late duplicate of their final state is dropped."""


@dataclass(frozen=True)
class TaskResult:
    task_id: str
    result_data: dict[str, Any]
    drone_id: str | None = None
    processing_time: float | None = None
    timestamp: str | None = None


@dataclass(frozen=True)
class TaskUpdate:
    """One status change. The last update of a task is final: `completed` (with `result`),
    `failed` or `cancelled` (with `error_code` and `error_message`)."""

    task_id: str
    status: str
    timestamp: str | None = None
    drone_id: str | None = None
    additional_data: dict[str, Any] = field(default_factory=dict)
    error_code: str | None = None
    error_message: str | None = None
    result: TaskResult | None = None

    @property
    def final(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def dedupe_key(self) -> bytes:
        return orjson.dumps(
            [self.status, self.timestamp, self.additional_data], option=orjson.OPT_SORT_KEYS
        )


def update_of_frame(frame: dict[str, Any]) -> TaskUpdate | None:
    """The update a notification frame carries; None for a final `completed` status without its
    result (the caller fetches the result instead) and for frames about no task."""
    kind, task_id = frame.get("type"), frame.get("task_id")
    if not isinstance(task_id, str):
        return None
    if kind == PROCESSING_RESULT_RECEIVED:
        return update_of_result(frame)
    if kind != TASK_STATUS_UPDATE or frame.get("status") == "completed":
        return None
    extra = frame.get("additional_data") or {}
    return TaskUpdate(
        task_id=task_id,
        status=str(frame.get("status")),
        timestamp=frame.get("timestamp"),
        drone_id=frame.get("drone_id"),
        additional_data=extra,
        error_code=extra.get("error_code"),
        error_message=extra.get("error_message"),
    )


def update_of_result(result: dict[str, Any]) -> TaskUpdate:
    """From a `processing_result_received` frame or a REST result document."""
    task_id = result["task_id"]
    if not result.get("success", False):
        return TaskUpdate(
            task_id=task_id,
            status="failed",
            timestamp=result.get("timestamp"),
            drone_id=result.get("drone_id"),
            error_code="drone_error",
            error_message=result.get("error_message") or "",
        )
    outcome = TaskResult(
        task_id=task_id,
        result_data=result.get("result_data") or {},
        drone_id=result.get("drone_id"),
        processing_time=result.get("processing_time"),
        timestamp=result.get("timestamp"),
    )
    return TaskUpdate(
        task_id=task_id,
        status="completed",
        timestamp=result.get("timestamp"),
        drone_id=result.get("drone_id"),
        result=outcome,
    )


def update_of_snapshot(task: dict[str, Any]) -> TaskUpdate:
    """From a task as REST returns it (not `completed`: its result is read instead)."""
    return TaskUpdate(
        task_id=task["task_id"],
        status=task["status"],
        timestamp=task.get("updated_at"),
        drone_id=task.get("drone_id"),
        error_code=task.get("error_code"),
        error_message=task.get("error_message"),
    )


def _no_later(stamp: str | None, than: str | None) -> bool:
    """Whether timestamp `stamp` is known to be no later than `than`."""
    if stamp is None or than is None:
        return False
    try:
        return parse_timestamp(stamp) <= parse_timestamp(than)
    except ValueError:
        return False


class TaskHandle:
    """A submitted task. `updates()` yields each change and ends with the final state;
    `result()` waits for that state."""

    def __init__(self, task_id: str, cancel: Callable[[str], Awaitable[bool]]) -> None:
        self.task_id = task_id
        self.history: list[TaskUpdate] = []
        self._seen: set[bytes] = set()
        self._snapshot: TaskUpdate | None = None
        self._final: TaskUpdate | None = None
        self._closed: str | None = None
        self._changed = asyncio.Event()
        self._cancel = cancel

    @property
    def status(self) -> str | None:
        return self.history[-1].status if self.history else None

    @property
    def done(self) -> bool:
        return self._final is not None

    def predates_last_update(self, updated_at: str | None) -> bool:
        """Whether a stored snapshot stamped `updated_at` is older than the last update seen. A
        REST read can be answered after a newer notification overtook it; applying it would
        move the task backwards."""
        return bool(self.history) and _no_later(updated_at, self.history[-1].timestamp)

    def record(self, update: TaskUpdate, *, snapshot: bool = False) -> bool:
        """Add an update unless it repeats one, follows the final state, or tells of a change a
        stored snapshot (`snapshot=True`) already showed."""
        key = update.dedupe_key()
        if self._final is not None or key in self._seen or self._shown_by_snapshot(update):
            return False
        self._seen.add(key)
        self.history.append(update)
        if snapshot:
            self._snapshot = update
        if update.final:
            self._final = update
        self._wake()
        return True

    def _shown_by_snapshot(self, update: TaskUpdate) -> bool:
        """A REST read can answer before the notification of the change it shows arrives. Both
        carry the change's stored time, so a notification of the snapshot's status stamped no
        later than it is that change (or an older one), not news."""
        shown = self._snapshot
        if shown is None or update.final or update.status != shown.status:
            return False
        return _no_later(update.timestamp, shown.timestamp)

    def close(self, reason: str) -> None:
        self._closed = reason
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def updates(self) -> AsyncIterator[TaskUpdate]:
        index = 0
        while True:
            while index < len(self.history):
                update = self.history[index]
                index += 1
                yield update
                if update.final:
                    return
            if self._closed is not None:
                raise ClientError(f"task {self.task_id}: {self._closed}")
            await self._changed.wait()

    # `timeout=` as asyncio.wait_for spells it: the SDK's documented call is result(timeout=30).
    async def wait(self, timeout: float | None = 30) -> TaskUpdate:  # noqa: ASYNC109
        """The final update, whatever it is."""
        async with asyncio.timeout(timeout):
            while self._final is None:
                if self._closed is not None:
                    raise ClientError(f"task {self.task_id}: {self._closed}")
                await self._changed.wait()
        return self._final

    async def result(self, timeout: float | None = 30) -> TaskResult:  # noqa: ASYNC109
        """The result of a completed task; TaskFailed if it failed or was cancelled."""
        final = await self.wait(timeout)
        if final.result is not None:
            return final.result
        raise TaskFailed(
            self.task_id, final.status, final.error_code or final.status, final.error_message or ""
        )

    async def cancel(self) -> bool:
        """True if this cancelled the task, False if it had already finished. The `cancelled`
        state then arrives through updates()."""
        return await self._cancel(self.task_id)

    def __repr__(self) -> str:
        return f"TaskHandle({self.task_id!r}, status={self.status!r})"


class Tracker:
    """Routes updates to handles; keeps those of tasks no handle claimed yet."""

    def __init__(self) -> None:
        self.handles: dict[str, TaskHandle] = {}
        self._finished: OrderedDict[str, TaskHandle] = OrderedDict()
        self._unclaimed: OrderedDict[str, list[TaskUpdate]] = OrderedDict()

    def add(self, handle: TaskHandle) -> TaskHandle:
        existing = self.handles.get(handle.task_id) or self._finished.get(handle.task_id)
        if existing is not None:
            return existing  # the same idempotent submission, or watched twice
        self.handles[handle.task_id] = handle
        for update in self._unclaimed.pop(handle.task_id, []):
            self.deliver(update)
        return handle

    def deliver(self, update: TaskUpdate, *, snapshot: bool = False) -> None:
        if update.task_id in self._finished:
            return
        handle = self.handles.get(update.task_id)
        if handle is None:
            self._unclaimed.setdefault(update.task_id, []).append(update)
            self._unclaimed.move_to_end(update.task_id)
            while len(self._unclaimed) > UNCLAIMED_TASKS_KEPT:
                self._unclaimed.popitem(last=False)
            return
        handle.record(update, snapshot=snapshot)
        if handle.done:
            del self.handles[update.task_id]
            self._finished[update.task_id] = handle
            while len(self._finished) > FINISHED_TASKS_KEPT:
                self._finished.popitem(last=False)

    def unfinished(self) -> dict[str, TaskHandle]:
        return dict(self.handles)

    def close(self, reason: str) -> None:
        for handle in self.handles.values():
            handle.close(reason)
