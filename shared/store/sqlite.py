"""SQLiteTaskStore: the TaskStore in one SQLite file, for embedded mode and for several processes
on one machine (WAL mode, so readers never wait for the writer).

One worker thread owns the connection and runs every statement. Calls made while it is busy
queue up, and the next batch runs them all in one transaction (group commit): a commit costs
the same for one call as for five hundred, and that is what makes thousands of tasks a second
possible. Each call is its own function of (connection, now); one that fails gets its own error
and the rest of its batch still commits. Futures are settled only after COMMIT, so a caller
never acts on a write that could still be rolled back.

Every transition is one conditional `UPDATE … RETURNING` (SQLite ≥ 3.35), so it is atomic even
when other processes write to the same file: BEGIN IMMEDIATE serialises the writers.
"""

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TypeVar, TypeVarTuple

import orjson
from pydantic import BaseModel

from shared.clock import format_timestamp, now_iso, parse_timestamp
from shared.errors import StoreError, StoreUnavailable, TaskNotFound
from shared.models import ErrorCode, NewTask, ResultRecord, TaskRecord, construct_trusted
from shared.store import CancelOutcome, CreateOutcome, ResultOutcome, StatusOutcome, TaskPage
from shared.store.cursor import decode_cursor, encode_cursor

if sqlite3.sqlite_version_info < (3, 35, 0):  # pragma: no cover - depends on the build
    raise ImportError(
        f"SQLiteTaskStore needs SQLite ≥ 3.35 (RETURNING), not {sqlite3.sqlite_version}"
    )

log = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
Ts = TypeVarTuple("Ts")

BUSY_TIMEOUT_MS: Final = 5000
MAX_BATCH: Final = 512
_BUSY_RETRIES: Final = 6
"""BEGIN IMMEDIATE waits BUSY_TIMEOUT_MS for the write lock; give up after this many waits."""
WRITER_CHECKPOINT_PAGES: Final = 10_000
CHECKPOINT_EVERY_JOBS: Final = 2000
CHECKPOINT_INTERVAL_S: Final = 1.0
_WRITE_LOCK_POLL_S: Final = (0.0002, 0.002)
"""First and longest pause between two attempts at the write lock (see _begin_write)."""

_TASK_FIELDS: Final = tuple(TaskRecord.model_fields)
_RESULT_FIELDS: Final = tuple(ResultRecord.model_fields)
_TASK_COLUMNS: Final = ", ".join(_TASK_FIELDS)
# RETURNING hands back a REAL column's integral value (10.0) as an integer, as it is stored on
# disk; SELECT converts it back. Cast, so records read either way compare and encode the same.
_TASK_RETURNING: Final = _TASK_COLUMNS.replace(
    "timeout_s, ttl_s", "CAST(timeout_s AS REAL), CAST(ttl_s AS REAL)"
)
_RESULT_COLUMNS: Final = ", ".join(_RESULT_FIELDS)
_LIVE: Final = "status IN ('pending', 'processing')"
"""Non-terminal. Spelled identically in queries and partial indexes: SQLite only uses a partial
index when the query repeats its WHERE terms."""

# expires_at = created_at + ttl_s and deadline_at = delivered_at + timeout_s are stored so the
# sweeps are index range scans instead of per-row arithmetic over the whole table.
SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS processingTasks (
        task_id TEXT NOT NULL,
        app_id TEXT NOT NULL,
        drone_id TEXT NOT NULL,
        task_type TEXT NOT NULL,
        input_data TEXT NOT NULL,
        status TEXT NOT NULL,
        priority INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        max_attempts INTEGER NOT NULL,
        timeout_s REAL,
        ttl_s REAL,
        idempotency_key TEXT,
        delivered_at TEXT,
        started_at TEXT,
        finished_at TEXT,
        error_code TEXT,
        error_message TEXT,
        delivery TEXT NOT NULL,
        dispatched_at TEXT,
        notified_at TEXT,
        expires_at TEXT,
        deadline_at TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS processingResults (
        result_id TEXT NOT NULL,
        task_id TEXT NOT NULL,
        drone_id TEXT NOT NULL,
        result_data TEXT NOT NULL,
        processing_time REAL,
        success INTEGER NOT NULL,
        error_message TEXT,
        timestamp TEXT NOT NULL
    )""",
    # The spec's indexes. A composite serves lookups on its leftmost column, so app_id, status
    # and drone_id are the first columns of the composites that list_tasks and
    # pending_for_drone need rather than separate indexes every write would also maintain.
    "CREATE UNIQUE INDEX IF NOT EXISTS ux_tasks_task_id ON processingTasks (task_id)",
    "CREATE INDEX IF NOT EXISTS ix_tasks_app ON processingTasks (app_id, updated_at, task_id)",
    "CREATE INDEX IF NOT EXISTS ix_tasks_status ON processingTasks (status, updated_at, task_id)",
    "CREATE INDEX IF NOT EXISTS ix_tasks_created ON processingTasks (created_at)",
    "CREATE INDEX IF NOT EXISTS ix_tasks_drone_pending"
    " ON processingTasks (drone_id, status, priority DESC, created_at)",
    "CREATE UNIQUE INDEX IF NOT EXISTS ux_tasks_idempotency"
    " ON processingTasks (app_id, idempotency_key) WHERE idempotency_key IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS ix_tasks_updated ON processingTasks (updated_at, task_id)",
    # Partial indexes for the sweeps: each holds only the few rows its sweep can return.
    "CREATE INDEX IF NOT EXISTS ix_tasks_undispatched ON processingTasks (updated_at)"
    f" WHERE dispatched_at IS NULL AND delivery = 'queued' AND {_LIVE}",
    "CREATE INDEX IF NOT EXISTS ix_tasks_routed ON processingTasks (dispatched_at)"
    f" WHERE delivery = 'queued' AND {_LIVE}",
    "CREATE INDEX IF NOT EXISTS ix_tasks_overdue ON processingTasks (deadline_at)"
    f" WHERE delivery = 'delivered' AND {_LIVE}",
    "CREATE INDEX IF NOT EXISTS ix_tasks_expire ON processingTasks (expires_at)"
    " WHERE status = 'pending' AND delivery = 'queued'",
    "CREATE INDEX IF NOT EXISTS ix_tasks_unnotified ON processingTasks (finished_at, task_id)"
    " WHERE notified_at IS NULL AND finished_at IS NOT NULL",
    "CREATE UNIQUE INDEX IF NOT EXISTS ux_results_task_id ON processingResults (task_id)",
    "CREATE INDEX IF NOT EXISTS ix_results_drone ON processingResults (drone_id, timestamp)",
    "CREATE INDEX IF NOT EXISTS ix_results_timestamp ON processingResults (timestamp)",
)

_INSERT_TASK: Final = (
    "INSERT INTO processingTasks (task_id, app_id, drone_id, task_type, input_data, status,"
    " priority, created_at, updated_at, attempts, max_attempts, timeout_s, ttl_s,"
    " idempotency_key, delivery, expires_at)"
    " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, 0, ?, ?, ?, ?, 'queued', ?)"
    " ON CONFLICT DO NOTHING"
)
_SELECT_TASK: Final = f"SELECT {_TASK_COLUMNS} FROM processingTasks WHERE task_id = ?"
_SELECT_BY_IDEMPOTENCY_KEY: Final = (
    f"SELECT {_TASK_COLUMNS} FROM processingTasks WHERE app_id = ? AND idempotency_key = ?"
)
PENDING_FOR_DRONE_SQL: Final = (
    f"SELECT {_TASK_COLUMNS} FROM processingTasks WHERE drone_id = ? AND status = 'pending'"
    " ORDER BY priority DESC, created_at, rowid LIMIT ?"
)
_SELECT_RESULT: Final = f"SELECT {_RESULT_COLUMNS} FROM processingResults WHERE task_id = ?"
RESULTS_FOR_DRONE_SQL: Final = (
    f"SELECT {_RESULT_COLUMNS} FROM processingResults WHERE drone_id = ?"
    " ORDER BY timestamp DESC, rowid DESC LIMIT ?"
)
_MARK_DISPATCHED: Final = (
    "UPDATE processingTasks SET dispatched_at = ?"
    f" WHERE task_id = ? AND delivery = 'queued' AND {_LIVE} RETURNING {_TASK_RETURNING}"
)
# INDEXED BY on the sweeps: with no statistics the planner prefers ix_tasks_status to these
# partial indexes, and the clause makes preparing the query fail should one stop matching.
UNDISPATCHED_SQL: Final = (
    f"SELECT {_TASK_COLUMNS} FROM processingTasks INDEXED BY ix_tasks_undispatched"
    f" WHERE dispatched_at IS NULL AND delivery = 'queued' AND {_LIVE} AND updated_at < ?"
    " ORDER BY updated_at LIMIT ?"
)
ROUTED_BEFORE_SQL: Final = (
    f"SELECT {_TASK_COLUMNS} FROM processingTasks INDEXED BY ix_tasks_routed"
    f" WHERE delivery = 'queued' AND {_LIVE} AND dispatched_at < ?"
    " ORDER BY dispatched_at LIMIT ?"
)
_RESET_DISPATCH: Final = (
    "UPDATE processingTasks SET dispatched_at = NULL"
    f" WHERE dispatched_at IS NOT NULL AND delivery = 'queued' AND {_LIVE}"
)
# A pending task past its ttl is refused, as `expire` will fail it; one a drone already
# started (processing) has outlived its ttl on purpose.
_CLAIM: Final = (
    "UPDATE processingTasks SET delivery = 'delivered', attempts = attempts + 1,"
    " delivered_at = ?1, updated_at = ?1, deadline_at = CASE WHEN timeout_s IS NULL THEN NULL"
    " ELSE strftime('%Y-%m-%dT%H:%M:%fZ', ?1, printf('%+.3f seconds', timeout_s)) END"
    f" WHERE task_id = ?2 AND drone_id = ?3 AND delivery = 'queued' AND {_LIVE}"
    " AND (status <> 'pending' OR expires_at IS NULL OR expires_at >= ?1)"
    f" RETURNING {_TASK_RETURNING}"
)
# SET expressions all read the row as it was, so `attempts` here is the count before release.
_RELEASE_SET: Final = (
    "UPDATE processingTasks SET"
    " status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE status END,"
    " error_code = CASE WHEN attempts >= max_attempts THEN 'max_attempts' ELSE error_code END,"
    " error_message = CASE WHEN attempts >= max_attempts THEN 'no result after '"
    " || attempts || ' attempt(s)' || coalesce(' (last: ' || ?2 || ')', '') ELSE error_message END,"
    " finished_at = CASE WHEN attempts >= max_attempts THEN ?1 ELSE finished_at END,"
    " delivery = 'queued', dispatched_at = NULL, deadline_at = NULL, updated_at = ?1"
)
_RELEASE: Final = (
    f"{_RELEASE_SET} WHERE task_id = ?3 AND drone_id = ?4 AND delivery = 'delivered'"
    f" AND {_LIVE} AND (?5 IS NULL OR attempts = ?5) RETURNING {_TASK_RETURNING}"
)
_RELEASE_DRONE: Final = (
    f"{_RELEASE_SET} WHERE drone_id = ?3 AND delivery = 'delivered' AND {_LIVE}"
    f" RETURNING {_TASK_RETURNING}"
)
OVERDUE_SQL: Final = (
    f"SELECT {_TASK_COLUMNS} FROM processingTasks INDEXED BY ix_tasks_overdue"
    f" WHERE delivery = 'delivered' AND {_LIVE} AND deadline_at < ? ORDER BY deadline_at LIMIT ?"
)
EXPIRE_CANDIDATES_SQL: Final = (
    "SELECT rowid FROM processingTasks INDEXED BY ix_tasks_expire"
    " WHERE status = 'pending' AND delivery = 'queued' AND expires_at < ?3"
    " ORDER BY expires_at LIMIT ?4"
)
_EXPIRE: Final = (
    "UPDATE processingTasks SET status = 'failed', error_code = 'expired', error_message = ?2,"
    " finished_at = ?1, updated_at = ?1"
    f" WHERE rowid IN ({EXPIRE_CANDIDATES_SQL}) RETURNING {_TASK_RETURNING}"
)
_APPLY_PROCESSING: Final = (
    "UPDATE processingTasks SET status = 'processing', started_at = coalesce(started_at, ?1),"
    f" updated_at = ?1 WHERE task_id = ?2 AND drone_id = ?3 AND {_LIVE}"
    f" RETURNING {_TASK_RETURNING}"
)
_END_WITH_RESULT: Final = (
    "UPDATE processingTasks SET status = ?2, error_code = ?3, error_message = ?4,"
    f" finished_at = ?1, updated_at = ?1, deadline_at = NULL WHERE task_id = ?5 AND {_LIVE}"
    f" RETURNING {_TASK_RETURNING}"
)
# ?2 is the result's task_id: the result goes in only while its task is live.
_INSERT_RESULT_IF_LIVE: Final = (
    f"INSERT INTO processingResults ({_RESULT_COLUMNS}) SELECT ?, ?, ?, ?, ?, ?, ?, ?"
    f" WHERE EXISTS (SELECT 1 FROM processingTasks WHERE task_id = ?2 AND {_LIVE})"
)
_DELETE_RESULT: Final = "DELETE FROM processingResults WHERE task_id = ?"
_CANCEL: Final = (
    "UPDATE processingTasks SET status = 'cancelled', error_code = 'cancelled',"
    " error_message = ?2, finished_at = ?1, updated_at = ?1, deadline_at = NULL"
    f" WHERE task_id = ?3 AND {_LIVE} RETURNING {_TASK_RETURNING}"
)
_MARK_NOTIFIED: Final = (
    "UPDATE processingTasks SET notified_at = ?"
    " WHERE task_id IN (SELECT value FROM json_each(?))"
    " AND notified_at IS NULL AND finished_at IS NOT NULL"
)
_JOINED_COLUMNS: Final = ", ".join(
    [f"t.{field}" for field in _TASK_FIELDS] + [f"r.{field}" for field in _RESULT_FIELDS]
)
UNNOTIFIED_SQL: Final = (
    f"SELECT {_JOINED_COLUMNS}"
    " FROM processingTasks AS t LEFT JOIN processingResults AS r ON r.task_id = t.task_id"
    " WHERE t.notified_at IS NULL AND t.finished_at IS NOT NULL"
    " ORDER BY t.finished_at, t.task_id LIMIT ?"
)

CANCELLED_MESSAGE: Final = "cancelled by the application"
EXPIRED_MESSAGE: Final = "no drone took the task within its ttl_s"


_Job = tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any], bool]
_Outcome = tuple[asyncio.Future[Any], bool, Any]


class SQLiteTaskStore:
    """The TaskStore port on a SQLite file; `async with SQLiteTaskStore(path) as store`.

    Raises StoreUnavailable when SQLite fails (locked for longer than BUSY_TIMEOUT_MS times
    _BUSY_RETRIES, disk full, I/O error), and TaskNotFound from `save_result` for an unknown
    task."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed: asyncio.Future[None] | None = None

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._closed = loop.create_future()
        self._thread = threading.Thread(
            target=self._work,
            args=(loop, ready, self._closed),
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
        self._jobs.put(None)
        await self._closed

    # --- creating and reading -------------------------------------------------------------
    async def create_task(self, new: NewTask) -> CreateOutcome:
        return await self._submit(True, _create_task, new)

    async def get_task(self, task_id: str) -> TaskRecord | None:
        return await self._submit(False, _get_task, task_id)

    async def pending_for_drone(self, drone_id: str, limit: int) -> list[TaskRecord]:
        if limit < 1:  # a negative LIMIT means "no limit" to SQLite
            return []
        return await self._submit(False, _select_tasks, PENDING_FOR_DRONE_SQL, (drone_id, limit))

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
            f"SELECT {_TASK_COLUMNS} FROM processingTasks{where}"
            " ORDER BY updated_at, task_id LIMIT ?"
        )
        params.append(limit + 1)
        tasks = await self._submit(False, _select_tasks, sql, tuple(params))
        if len(tasks) <= limit:
            return TaskPage(tasks, None)
        del tasks[limit:]
        return TaskPage(tasks, encode_cursor(tasks[-1].updated_at, tasks[-1].task_id))

    async def get_result(self, task_id: str) -> ResultRecord | None:
        return await self._submit(False, _get_result, task_id)

    async def results_for_drone(self, drone_id: str, limit: int) -> list[ResultRecord]:
        if limit < 1:
            return []
        return await self._submit(False, _results_for_drone, drone_id, limit)

    # --- dispatch and delivery ------------------------------------------------------------
    async def mark_dispatched(self, task_id: str) -> TaskRecord | None:
        return await self._submit(True, _mark_dispatched, task_id)

    async def undispatched(self, older_than: str, limit: int) -> list[TaskRecord]:
        if limit < 1:
            return []
        return await self._submit(False, _select_tasks, UNDISPATCHED_SQL, (older_than, limit))

    async def routed_before(self, routed_before: str, limit: int) -> list[TaskRecord]:
        if limit < 1:
            return []
        return await self._submit(False, _select_tasks, ROUTED_BEFORE_SQL, (routed_before, limit))

    async def reset_dispatch(self) -> int:
        return await self._submit(True, _reset_dispatch)

    async def claim(self, task_id: str, drone_id: str) -> TaskRecord | None:
        return await self._submit(True, _claim, task_id, drone_id)

    async def release(
        self,
        task_id: str,
        drone_id: str,
        *,
        reason: ErrorCode | None = None,
        attempt: int | None = None,
    ) -> TaskRecord | None:
        return await self._submit(True, _release, task_id, drone_id, reason, attempt)

    async def release_drone(self, drone_id: str) -> list[TaskRecord]:
        return await self._submit(True, _release_drone, drone_id)

    async def overdue(self, now: str, limit: int) -> list[TaskRecord]:
        if limit < 1:
            return []
        return await self._submit(False, _select_tasks, OVERDUE_SQL, (now, limit))

    async def expire(self, now: str, limit: int) -> list[TaskRecord]:
        if limit < 1:
            return []
        return await self._submit(True, _expire, now, limit)

    # --- drone reports ----------------------------------------------------------------------
    async def apply_status(self, task_id: str, drone_id: str, status: str) -> StatusOutcome:
        if status != "processing":
            return StatusOutcome("invalid", None)
        return await self._submit(True, _apply_processing, task_id, drone_id)

    async def save_result(self, result: ResultRecord) -> ResultOutcome:
        return await self._submit(True, _save_result, result)

    async def cancel(self, task_id: str) -> CancelOutcome | None:
        return await self._submit(True, _cancel, task_id)

    # --- notification bookkeeping ----------------------------------------------------------
    async def mark_notified(self, task_ids: Sequence[str]) -> None:
        if task_ids:
            await self._submit(True, _mark_notified, orjson.dumps(list(task_ids)).decode())

    async def unnotified(self, limit: int) -> list[tuple[TaskRecord, ResultRecord | None]]:
        if limit < 1:
            return []
        return await self._submit(False, _unnotified, limit)

    # --- the worker -----------------------------------------------------------------------
    def _submit(
        self,
        write: bool,
        op: Callable[[sqlite3.Connection, str, *Ts], T],
        *args: *Ts,
    ) -> asyncio.Future[T]:
        loop = self._loop
        if loop is None:
            raise StoreUnavailable(f"SQLite store {self.path} is not open")
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((op, args, future, write))
        return future

    def _work(
        self,
        loop: asyncio.AbstractEventLoop,
        ready: asyncio.Future[None],
        closed: asyncio.Future[None],
    ) -> None:
        try:
            connection = _connect(self.path)
        except (sqlite3.Error, OSError) as exc:
            loop.call_soon_threadsafe(_fail, ready, StoreUnavailable(f"SQLite {self.path}: {exc}"))
            return
        loop.call_soon_threadsafe(_succeed, ready, None)
        jobs = self._jobs
        checkpointer = _Checkpointer(self.path)
        writes_since_checkpoint = 0
        try:
            stopping = False
            while not stopping:
                first = jobs.get()
                if first is None:
                    break
                batch = [first]
                while len(batch) < MAX_BATCH:
                    try:
                        job = jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        stopping = True
                        break
                    batch.append(job)
                outcomes = _run_batch(connection, batch)
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    loop.call_soon_threadsafe(_settle, outcomes)
                writes_since_checkpoint += len(batch)
                if writes_since_checkpoint >= CHECKPOINT_EVERY_JOBS:
                    writes_since_checkpoint = 0
                    checkpointer.request()
        finally:
            checkpointer.stop()
            connection.close()
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_succeed, closed, None)


class _Checkpointer:
    """Copies the WAL back into the database on a thread of its own.

    SQLite's automatic checkpoint runs inside the COMMIT that crosses 1,000 WAL pages and
    fsyncs there, so the writer, and every caller waiting on its batch, stalled on the disk
    about ten times a second at full load. A PASSIVE checkpoint on another connection never
    blocks the writer; the writer's own, rarer checkpoint then finds most frames copied.
    Together: 3,000 → 3,600-4,100 round trips/s in embedded mode (bench/loadgen.py)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._wanted = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, name=f"sqlite-checkpoint:{path.name}", daemon=True
        )
        self._thread.start()

    def request(self) -> None:
        self._wanted.set()

    def stop(self) -> None:
        self._stopping = True
        self._wanted.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            connection = sqlite3.connect(self._path, isolation_level=None)
        except sqlite3.Error:
            log.warning("no checkpoint connection to %s; the WAL grows until restart", self._path)
            return
        try:
            while True:
                self._wanted.wait(CHECKPOINT_INTERVAL_S)
                self._wanted.clear()
                if self._stopping:
                    return
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # another process is checkpointing: next time
                    log.debug("checkpoint of %s skipped: %s", self._path, exc)
        finally:
            connection.close()


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: no implicit transactions; _run_batch issues BEGIN and COMMIT.
    connection = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, cached_statements=256
    )
    try:
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Switching to WAL takes an exclusive lock, which another process starting at the same
        # moment may hold; the busy handler does not cover every path, so retry.
        _retry_busy(lambda: connection.execute("PRAGMA journal_mode = WAL"))
        connection.execute("PRAGMA synchronous = NORMAL")
        # The writer still checkpoints, so the WAL cannot grow without bound under a steady
        # write load (a PASSIVE checkpoint never catches up with one, and only a complete one
        # lets the WAL start over), but rarely, and mostly over frames _Checkpointer has
        # already copied. 10,000 pages: a WAL of about 40 MB.
        connection.execute(f"PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES}")
        # Savepoints and multi-row statements journal the pages they change; in a temp file
        # that doubled the cost of save_result.
        connection.execute("PRAGMA temp_store = MEMORY")

        def create_schema() -> None:
            connection.execute("BEGIN IMMEDIATE")
            try:
                for statement in SCHEMA:
                    connection.execute(statement)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

        _retry_busy(create_schema)
    except BaseException:
        connection.close()
        raise
    return connection


def _retry_busy(action: Callable[[], object]) -> None:
    for attempt in range(_BUSY_RETRIES):
        try:
            action()
            return
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or attempt == _BUSY_RETRIES - 1:
                raise
            time.sleep(0.05)


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _begin_write(connection: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, trying again for the write lock within a fraction of a millisecond.
    SQLite's busy handler sleeps 1, 2, 5, 10, 15, 20, 25… ms between attempts, so when several
    processes write one file (a distributed deployment on SQLite) a writer waited 10-40 ms for a
    lock that was free again after one; that wait was most of a task's round trip."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS * _BUSY_RETRIES / 1000
    pause_s, longest_s = _WRITE_LOCK_POLL_S
    connection.execute("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(pause_s)
            pause_s = min(2 * pause_s, longest_s)
    finally:
        # Statements inside the transaction keep SQLite's own handler (checkpoints, recovery).
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")


def _translate(exc: sqlite3.Error) -> StoreError:
    if isinstance(exc, sqlite3.IntegrityError):
        return StoreError(f"SQLite: {exc}")
    return StoreUnavailable(f"SQLite: {exc}")


def _run_batch(connection: sqlite3.Connection, batch: list[_Job]) -> list[_Outcome]:
    """Run every job in one transaction. Only reads: a deferred BEGIN, which in WAL mode takes
    no lock other writers wait for. A failing job rolls back only its own statement (each job
    is one write statement or a SAVEPOINT), unless SQLite aborted the whole transaction."""
    write = any(job[3] for job in batch)
    try:
        if write:
            _begin_write(connection)
        else:
            _retry_busy(lambda: connection.execute("BEGIN"))
    except sqlite3.Error as exc:
        error = _translate(exc)
        return [(job[2], False, error) for job in batch]
    now = now_iso()  # one clock read per batch
    outcomes: list[_Outcome] = []
    for op, args, future, _ in batch:
        try:
            outcomes.append((future, True, op(connection, now, *args)))
        except sqlite3.Error as exc:
            outcomes.append((future, False, _translate(exc)))
            if not connection.in_transaction:
                # SQLite rolled the whole transaction back (SQLITE_FULL, IOERR, …): the jobs
                # before this one are undone too, so none of them may report success.
                aborted = StoreUnavailable(f"SQLite: transaction aborted: {exc}")
                return [(job[2], False, aborted) for job in batch]
        except Exception as exc:
            outcomes.append((future, False, exc))
    try:
        connection.execute("COMMIT")
    except sqlite3.Error as exc:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")
        error = _translate(exc)
        return [(job[2], False, error) for job in batch]
    return outcomes


def _settle(outcomes: list[_Outcome]) -> None:
    for future, ok, value in outcomes:
        if not future.done():  # a caller that gave up (cancelled) no longer listens
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


def _succeed(future: asyncio.Future[None], value: None) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[None], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


# --- rows to records ------------------------------------------------------------------------


def _task(row: Sequence[Any]) -> TaskRecord:
    values = dict(zip(_TASK_FIELDS, row, strict=False))
    values["input_data"] = orjson.loads(values["input_data"])
    return construct_trusted(TaskRecord, values)


def _result(row: Sequence[Any]) -> ResultRecord:
    values = dict(zip(_RESULT_FIELDS, row, strict=False))
    values["result_data"] = orjson.loads(values["result_data"])
    values["success"] = bool(values["success"])
    return construct_trusted(ResultRecord, values)


# --- the jobs: each runs on the worker thread inside the batch's transaction -------------------


def _create_task(connection: sqlite3.Connection, now: str, new: NewTask) -> CreateOutcome:
    expires_at = None
    if new.ttl_s is not None:
        expires_at = format_timestamp(parse_timestamp(now) + timedelta(seconds=new.ttl_s))
    inserted = connection.execute(
        _INSERT_TASK,
        (
            new.task_id,
            new.app_id,
            new.drone_id,
            new.task_type,
            orjson.dumps(new.input_data).decode(),
            new.priority,
            now,
            now,
            new.max_attempts,
            new.timeout_s,
            new.ttl_s,
            new.idempotency_key,
            expires_at,
        ),
    ).rowcount
    if inserted:
        values = {
            "task_id": new.task_id,
            "app_id": new.app_id,
            "drone_id": new.drone_id,
            "task_type": new.task_type,
            "input_data": new.input_data,
            "status": "pending",
            "priority": new.priority,
            "created_at": now,
            "updated_at": now,
            "attempts": 0,
            "max_attempts": new.max_attempts,
            "timeout_s": new.timeout_s,
            "ttl_s": new.ttl_s,
            "idempotency_key": new.idempotency_key,
            "delivered_at": None,
            "started_at": None,
            "finished_at": None,
            "error_code": None,
            "error_message": None,
            "delivery": "queued",
            "dispatched_at": None,
            "notified_at": None,
        }
        return CreateOutcome(construct_trusted(TaskRecord, values), created=True)
    # A unique index refused it: the idempotency key is taken, or the same task_id was retried.
    row = None
    if new.idempotency_key is not None:
        row = connection.execute(
            _SELECT_BY_IDEMPOTENCY_KEY, (new.app_id, new.idempotency_key)
        ).fetchone()
    if row is None:
        row = connection.execute(_SELECT_TASK, (new.task_id,)).fetchone()
    if row is None:
        raise StoreError(f"task {new.task_id} was neither inserted nor found")
    return CreateOutcome(_task(row), created=False)


def _get_task(connection: sqlite3.Connection, now: str, task_id: str) -> TaskRecord | None:
    row = connection.execute(_SELECT_TASK, (task_id,)).fetchone()
    return None if row is None else _task(row)


def _select_tasks(
    connection: sqlite3.Connection, now: str, sql: str, params: tuple[object, ...]
) -> list[TaskRecord]:
    return [_task(row) for row in connection.execute(sql, params)]


def _get_result(connection: sqlite3.Connection, now: str, task_id: str) -> ResultRecord | None:
    row = connection.execute(_SELECT_RESULT, (task_id,)).fetchone()
    return None if row is None else _result(row)


def _results_for_drone(
    connection: sqlite3.Connection, now: str, drone_id: str, limit: int
) -> list[ResultRecord]:
    return [_result(row) for row in connection.execute(RESULTS_FOR_DRONE_SQL, (drone_id, limit))]


def _one_task(cursor: sqlite3.Cursor) -> TaskRecord | None:
    # fetchall, not fetchone: it steps the UPDATE … RETURNING to its end, so the statement is
    # finished before COMMIT whatever happens to the cursor object.
    rows = cursor.fetchall()
    return _task(rows[0]) if rows else None


def _mark_dispatched(connection: sqlite3.Connection, now: str, task_id: str) -> TaskRecord | None:
    return _one_task(connection.execute(_MARK_DISPATCHED, (now, task_id)))


def _reset_dispatch(connection: sqlite3.Connection, now: str) -> int:
    return connection.execute(_RESET_DISPATCH).rowcount


def _claim(
    connection: sqlite3.Connection, now: str, task_id: str, drone_id: str
) -> TaskRecord | None:
    return _one_task(connection.execute(_CLAIM, (now, task_id, drone_id)))


def _release(
    connection: sqlite3.Connection,
    now: str,
    task_id: str,
    drone_id: str,
    reason: ErrorCode | None,
    attempt: int | None,
) -> TaskRecord | None:
    return _one_task(connection.execute(_RELEASE, (now, reason, task_id, drone_id, attempt)))


def _release_drone(connection: sqlite3.Connection, now: str, drone_id: str) -> list[TaskRecord]:
    return [_task(row) for row in connection.execute(_RELEASE_DRONE, (now, None, drone_id))]


def _expire(connection: sqlite3.Connection, now: str, cutoff: str, limit: int) -> list[TaskRecord]:
    rows = connection.execute(_EXPIRE, (now, EXPIRED_MESSAGE, cutoff, limit)).fetchall()
    return sorted(map(_task, rows), key=lambda task: (task.created_at, task.task_id))


def _apply_processing(
    connection: sqlite3.Connection, now: str, task_id: str, drone_id: str
) -> StatusOutcome:
    task = _one_task(connection.execute(_APPLY_PROCESSING, (now, task_id, drone_id)))
    if task is not None:
        return StatusOutcome("applied", task)
    task = _get_task(connection, now, task_id)
    if task is None:
        return StatusOutcome("not_found", None)
    if task.drone_id != drone_id:
        return StatusOutcome("not_yours", task)
    return StatusOutcome("ignored", task)


def _save_result(connection: sqlite3.Connection, now: str, result: ResultRecord) -> ResultOutcome:
    status, error_code, error_message = (
        ("completed", None, None)
        if result.success
        else ("failed", "drone_error", result.error_message)
    )
    # Result first, then the task's end: two statements where a savepoint around them took
    # four, in the hottest write. The batch holds the write lock, so nothing can end the task in
    # between; should ending it fail anyway, the result it would have orphaned goes again.
    inserted = connection.execute(
        _INSERT_RESULT_IF_LIVE,
        (
            result.result_id,
            result.task_id,
            result.drone_id,
            orjson.dumps(result.result_data).decode(),
            result.processing_time,
            result.success,
            result.error_message,
            result.timestamp,
        ),
    ).rowcount
    if inserted:
        try:
            task = _one_task(
                connection.execute(
                    _END_WITH_RESULT, (now, status, error_code, error_message, result.task_id)
                )
            )
            if task is None:
                raise StoreError(f"task {result.task_id} was live, then not, in one transaction")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # gone if SQLite aborted the transaction
                connection.execute(_DELETE_RESULT, (result.task_id,))
            raise
        return ResultOutcome(task, result, stored=True)
    task = _get_task(connection, now, result.task_id)
    if task is None:
        raise TaskNotFound(result.task_id)
    return ResultOutcome(task, _get_result(connection, now, result.task_id), stored=False)


def _cancel(connection: sqlite3.Connection, now: str, task_id: str) -> CancelOutcome | None:
    # `delivery` is left as it was, so the returned row still says whether a drone held it.
    task = _one_task(connection.execute(_CANCEL, (now, CANCELLED_MESSAGE, task_id)))
    if task is not None:
        return CancelOutcome(task, cancelled=True, was_delivered=task.delivery == "delivered")
    task = _get_task(connection, now, task_id)
    if task is None:
        return None
    return CancelOutcome(task, cancelled=False, was_delivered=False)


def _mark_notified(connection: sqlite3.Connection, now: str, task_ids_json: str) -> None:
    connection.execute(_MARK_NOTIFIED, (now, task_ids_json))


def _unnotified(
    connection: sqlite3.Connection, now: str, limit: int
) -> list[tuple[TaskRecord, ResultRecord | None]]:
    width = len(_TASK_FIELDS)
    return [
        (_task(row[:width]), None if row[width] is None else _result(row[width:]))
        for row in connection.execute(UNNOTIFIED_SQL, (limit,))
    ]
