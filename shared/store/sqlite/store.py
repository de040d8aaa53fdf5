"""SQLiteTaskStore: the store calls, each queued as a job for the worker thread."""

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Self, TypeVar, TypeVarTuple

import orjson

from shared.errors import StatusNotReportable, StoreUnavailable
from shared.lifecycle import DRONE_REPORTABLE, ErrorCode
from shared.models import NewTask, ResultRecord, TaskRecord
from shared.store import (
    CancelOutcome,
    CreateOutcome,
    Presence,
    PresenceKind,
    ResultOutcome,
    StatusOutcome,
    TaskPage,
    TokenRecord,
)
from shared.store.cursor import decode_cursor, encode_cursor
from shared.store.sqlite import jobs, presence, tokens
from shared.store.sqlite.schema import (
    APP_PENDING_FOR_DRONE_SQL,
    COUNT_PENDING_SQL,
    HELD_BY_SQL,
    OVERDUE_SQL,
    PENDING_FOR_DRONE_SQL,
    ROUTED_BEFORE_SQL,
    TASK_COLUMNS,
    UNDISPATCHED_SQL,
)
from shared.store.sqlite.worker import Job, run_jobs

LAZY_WRITE_S: Final = 0.05
"""How long a lazy write (see _enqueue) waits for another call's batch to go with."""

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


SQLITE_INCARNATION: Final = "sqlite"


class SQLiteTaskStore:
    """The TaskStore port on a SQLite file; `async with SQLiteTaskStore(path) as store`.

    Raises StoreUnavailable when SQLite fails (locked for longer than worker.BUSY_TIMEOUT_MS
    a few times over, disk full, I/O error), and the TaskError tree as the port says."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._jobs: queue.SimpleQueue[list[Job] | None] = queue.SimpleQueue()
        self._pending: list[Job] = []  # queued this event-loop iteration, not yet handed off
        self._handing_off = False  # _hand_off is queued for this loop iteration
        self._lazy_hand_off: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed: asyncio.Future[None] | None = None

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._closed = loop.create_future()
        self._thread = threading.Thread(
            target=run_jobs,
            args=(self.path, self._jobs, loop, ready, self._closed),
            name=f"sqlite:{self.path.name}",
            daemon=True,  # never holds up interpreter exit; WAL keeps a cut-off commit atomic
        )
        self._thread.start()
        await ready
        self._loop = loop
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is None or self._closed is None:
            return
        self._loop = None  # refuse new calls; the worker finishes the queued ones first
        self._hand_off()
        self._jobs.put(None)
        await self._closed

    # --- creating and reading -------------------------------------------------------------
    async def create_task(self, new: NewTask) -> CreateOutcome:
        return await self._write(jobs.create_task, new)

    async def get_task(self, task_id: str) -> TaskRecord | None:
        return await self._read(jobs.get_task, task_id)

    async def pending_for_drone(
        self, drone_id: str, limit: int, *, app_id: str | None = None
    ) -> list[TaskRecord]:
        if limit < 1:  # a negative LIMIT means "no limit" to SQLite
            return []
        if app_id is not None:
            return await self._read(
                jobs.select_tasks, APP_PENDING_FOR_DRONE_SQL, (drone_id, app_id, limit)
            )
        return await self._read(jobs.select_tasks, PENDING_FOR_DRONE_SQL, (drone_id, limit))

    async def list_tasks(
        self,
        *,
        app_id: str | None,
        status: str | None,
        updated_since: str | None,
        limit: int,
        cursor: str | None,
    ) -> TaskPage:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        after = None if cursor is None else decode_cursor(cursor)
        terms: list[str] = []
        params: list[object] = []
        for term, value in (
            ("app_id = ?", app_id),
            ("status = ?", status),
            ("updated_at >= ?", updated_since),
        ):
            if value is not None:
                terms.append(term)
                params.append(value)
        if after is not None:
            terms.append("(updated_at, task_id) > (?, ?)")
            params.extend(after)
        where = f" WHERE {' AND '.join(terms)}" if terms else ""
        sql = (
            f"SELECT {TASK_COLUMNS} FROM processingTasks{where}"
            " ORDER BY updated_at, task_id LIMIT ?"
        )
        params.append(limit + 1)
        tasks = await self._read(jobs.select_tasks, sql, tuple(params))
        if len(tasks) <= limit:
            return TaskPage(tasks, None)
        del tasks[limit:]
        return TaskPage(tasks, encode_cursor(tasks[-1].updated_at, tasks[-1].task_id))

    async def count_pending(self, app_id: str, at_most: int) -> int:
        if at_most < 1:
            return 0
        return await self._read(jobs.count, COUNT_PENDING_SQL, (app_id, at_most))

    async def get_result(self, task_id: str) -> ResultRecord | None:
        return await self._read(jobs.get_result, task_id)

    async def results_for_drone(
        self, drone_id: str, limit: int, *, app_id: str | None = None
    ) -> list[ResultRecord]:
        if limit < 1:
            return []
        return await self._read(jobs.results_for_drone, drone_id, limit, app_id)

    # --- dispatch and delivery ------------------------------------------------------------
    async def mark_dispatched(self, task_id: str) -> TaskRecord | None:
        return await self._write(jobs.mark_dispatched, task_id)

    async def stamp_dispatched(self, task_ids: Sequence[str]) -> None:
        if task_ids:
            task_ids_json = orjson.dumps(list(task_ids)).decode()
            await self._write(jobs.stamp_dispatched, task_ids_json)

    async def undispatched(self, older_than: str, limit: int) -> list[TaskRecord]:
        if limit < 1:
            return []
        return await self._read(jobs.select_tasks, UNDISPATCHED_SQL, (older_than, limit))

    async def routed_before(self, routed_before: str, limit: int) -> list[TaskRecord]:
        if limit < 1:
            return []
        return await self._read(jobs.select_tasks, ROUTED_BEFORE_SQL, (routed_before, limit))

    async def incarnation(self) -> str | None:
        # A committed transaction outlives the crash of any process that uses the file: one
        # life, which every dispatcher has seen.
        return SQLITE_INCARNATION

    async def routed_incarnation(self) -> str | None:
        return SQLITE_INCARNATION

    async def record_routed_incarnation(self, incarnation: str) -> None:
        pass

    async def reset_dispatch(self) -> int:
        return await self._write(jobs.reset_dispatch)

    async def claim(self, task_id: str, drone_id: str) -> TaskRecord | None:
        return await self._write(jobs.claim, task_id, drone_id)

    async def release(
        self,
        task_id: str,
        drone_id: str,
        *,
        reason: ErrorCode | None = None,
        attempt: int | None = None,
    ) -> TaskRecord | None:
        return await self._write(jobs.release, task_id, drone_id, reason, attempt)

    async def held_by(self, drone_id: str) -> list[TaskRecord]:
        return await self._read(jobs.select_tasks, HELD_BY_SQL, (drone_id,))

    async def overdue(self, now: str, limit: int) -> list[TaskRecord]:
        if limit < 1:
            return []
        return await self._read(jobs.select_tasks, OVERDUE_SQL, (now, limit))

    async def expire(self, now: str, limit: int) -> list[TaskRecord]:
        if limit < 1:
            return []
        return await self._write(jobs.expire, now, limit)

    # --- drone reports ----------------------------------------------------------------------
    async def apply_status(self, task_id: str, drone_id: str, status: str) -> StatusOutcome:
        if status not in DRONE_REPORTABLE:
            raise StatusNotReportable(task_id, f"a drone may not report status {status!r}")
        return await self._write(jobs.apply_processing, task_id, drone_id)

    async def save_result(self, result: ResultRecord) -> ResultOutcome:
        return await self._write(jobs.save_result, result)

    async def cancel(self, task_id: str) -> CancelOutcome:
        return await self._write(jobs.cancel, task_id)

    # --- notification bookkeeping ----------------------------------------------------------
    async def mark_notified(self, task_ids: Sequence[str]) -> None:
        if task_ids:
            task_ids_json = orjson.dumps(list(task_ids)).decode()
            await self._enqueue(jobs.mark_notified, (task_ids_json,), writes=True, lazy=True)

    async def unnotified(self, limit: int) -> list[tuple[TaskRecord, ResultRecord | None]]:
        if limit < 1:
            return []
        return await self._read(jobs.unnotified, limit)

    # --- tokens ----------------------------------------------------------------------------
    async def record_token(self, token: TokenRecord) -> None:
        await self._write(tokens.record_token, token)

    async def revoke_token(self, jti: str) -> TokenRecord:
        return await self._write(tokens.revoke_token, jti)

    async def list_tokens(self, limit: int) -> list[TokenRecord]:
        if limit < 1:
            return []
        return await self._read(tokens.list_tokens, limit)

    async def token_revoked(self, jti: str) -> bool:
        return await self._read(tokens.token_revoked, jti)

    async def revoked_since(self, since: str) -> list[str]:
        return await self._read(tokens.revoked_since, since)

    # --- presence ------------------------------------------------------------------------------
    async def put_presence(
        self,
        gateway: str,
        entries: Sequence[Presence],
        ttl_s: float,
        *,
        gone: Sequence[str] = (),
        complete: bool = False,
    ) -> None:
        await self._write(
            presence.put_presence, gateway, list(entries), ttl_s, list(gone), complete
        )

    async def live_presence(self, kind: PresenceKind) -> list[Presence]:
        return await self._read(presence.live_presence, kind)

    async def count_queued(self, drone_ids: Sequence[str]) -> dict[str, int]:
        if not drone_ids:
            return {}
        return await self._read(presence.count_queued, list(drone_ids))

    # --- the worker -----------------------------------------------------------------------
    # Two methods rather than a flag at every call: a batch with any write takes the write lock
    # (BEGIN IMMEDIATE), one of reads only does not.
    def _read(
        self, op: Callable[[sqlite3.Connection, str, *Ts], T], *args: *Ts
    ) -> asyncio.Future[T]:
        return self._enqueue(op, args, writes=False)

    def _write(
        self, op: Callable[[sqlite3.Connection, str, *Ts], T], *args: *Ts
    ) -> asyncio.Future[T]:
        return self._enqueue(op, args, writes=True)

    def _enqueue(
        self,
        op: Callable[[sqlite3.Connection, str, *Ts], T],
        args: tuple[*Ts],
        *,
        writes: bool,
        lazy: bool = False,
    ) -> asyncio.Future[T]:
        """`lazy`: a write nobody waits for on a task's path (mark_notified) goes with the next
        call's batch, or after LAZY_WRITE_S when none comes. At one task in flight the mark of
        one task's notification then shares the next task's create_task transaction: three
        batches a task, not four, each a hand-off to the worker and back."""
        loop = self._loop
        if loop is None:
            raise StoreUnavailable(f"SQLite store {self.path} is not open")
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((op, args, future, writes))
        if not lazy and not self._handing_off:
            self._handing_off = True
            loop.call_soon(self._hand_off)
        elif lazy and not self._handing_off and self._lazy_hand_off is None:
            self._lazy_hand_off = loop.call_later(LAZY_WRITE_S, self._hand_off)
        return future

    def _hand_off(self) -> None:
        """The calls of one loop iteration go to the worker together, in the order made. Each
        put wakes the worker thread (a futex call, and a contest for the GIL with this loop):
        under load a dozen calls an iteration cost a dozen wake-ups, now one."""
        self._handing_off = False
        if self._lazy_hand_off is not None:
            self._lazy_hand_off.cancel()
            self._lazy_hand_off = None
        if self._pending:
            batch, self._pending = self._pending, []
            self._jobs.put(batch)
