"""The worker thread that owns the connection: it runs queued jobs in batches, one transaction
each (group commit), takes the write lock, and keeps checkpoints off the writer."""

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from shared.clock import now_iso
from shared.errors import StoreError, StoreUnavailable
from shared.store.sqlite.schema import SCHEMA

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS: Final = 5000
MAX_BATCH: Final = 512
_BUSY_RETRIES: Final = 6
"""BEGIN IMMEDIATE waits BUSY_TIMEOUT_MS for the write lock; give up after this many waits."""
WRITER_CHECKPOINT_PAGES: Final = 10_000
CHECKPOINT_EVERY_JOBS: Final = 250
"""Jobs between two requests to _Checkpointer. The writer's own checkpoint (when the WAL passes
WRITER_CHECKPOINT_PAGES) fsyncs the WAL written since _Checkpointer last did: after 2,000 jobs
that was 20-30 ms with the writer, and every store call behind it, stopped, about every two
seconds at 400 tasks/s, which set p99 (bench/EMBEDDED.md). After 250 it is a few milliseconds."""
CHECKPOINT_INTERVAL_S: Final = 1.0
_WRITE_LOCK_POLL_S: Final = (0.0002, 0.002)
"""First and longest pause between two attempts at the write lock (see _begin_write)."""

Job = tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any], bool]
_Outcome = tuple[asyncio.Future[Any], bool, Any]


def run_jobs(
    path: Path,
    jobs: queue.SimpleQueue[list[Job] | None],
    loop: asyncio.AbstractEventLoop,
    ready: asyncio.Future[None],
    closed: asyncio.Future[None],
) -> None:
    try:
        connection = _connect(path)
    except (sqlite3.Error, OSError) as exc:
        loop.call_soon_threadsafe(_fail, ready, StoreUnavailable(f"SQLite {path}: {exc}"))
        return
    loop.call_soon_threadsafe(_succeed, ready, None)
    checkpointer = _Checkpointer(path)
    writes_since_checkpoint = 0
    try:
        stopping = False
        while not stopping:
            first = jobs.get()
            if first is None:
                break
            # Jobs come in hand-offs, one per event-loop iteration that made calls; a batch
            # takes whole hand-offs, so it may pass MAX_BATCH by the last one's length.
            batch = first
            while len(batch) < MAX_BATCH:
                try:
                    more = jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch += more
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
            log.warning("no checkpoint connection to %s; the writer checkpoints alone", self._path)
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


class Connection(sqlite3.Connection):
    """The worker's connection. It remembers its busy timeout, so that the two statements that
    change it run only when a read batch follows a write batch or the other way round: write
    batches take the lock with none (see _begin_write), reads keep SQLite's own handler. At one
    task in flight every batch is a write, and switching twice in each was two statements of the
    four a batch adds to its jobs."""

    busy_timeout_ms = BUSY_TIMEOUT_MS

    def use_busy_timeout(self, ms: int) -> None:
        if self.busy_timeout_ms != ms:
            self.execute(f"PRAGMA busy_timeout = {ms}")
            self.busy_timeout_ms = ms


def _connect(path: Path) -> Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: no implicit transactions; _run_batch issues BEGIN and COMMIT.
    connection = sqlite3.connect(
        path,
        timeout=BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,
        cached_statements=256,
        factory=Connection,
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


def _begin_write(connection: Connection) -> None:
    """BEGIN IMMEDIATE, trying again for the write lock within a fraction of a millisecond.
    SQLite's busy handler sleeps 1, 2, 5, 10, 15, 20, 25… ms between attempts, so when several
    processes write one file (a distributed deployment on SQLite) a writer waited 10-40 ms for a
    lock that was free again after one; that wait was most of a task's round trip.

    The statements inside the transaction run without a busy handler too: once BEGIN IMMEDIATE
    has the write lock and the read snapshot, none of them waits for another connection (WAL
    recovery happens in the BEGIN, and COMMIT's own checkpoint is PASSIVE, which never calls
    the handler)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS * _BUSY_RETRIES / 1000
    pause_s, longest_s = _WRITE_LOCK_POLL_S
    connection.use_busy_timeout(0)
    while True:
        try:
            connection.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause_s)
        pause_s = min(2 * pause_s, longest_s)


def _translate(exc: sqlite3.Error) -> StoreError:
    if isinstance(exc, sqlite3.IntegrityError):
        return StoreError(f"SQLite: {exc}")
    return StoreUnavailable(f"SQLite: {exc}")


def _run_batch(connection: Connection, batch: list[Job]) -> list[_Outcome]:
    """Run every job in one transaction. Only reads: a deferred BEGIN, which in WAL mode takes
    no lock other writers wait for. A failing job rolls back only its own statement (each job
    is one write statement or a SAVEPOINT), unless SQLite aborted the whole transaction."""
    write = any(job[3] for job in batch)
    try:
        if write:
            _begin_write(connection)
        else:
            # A read may meet WAL recovery by another process at its first step.
            connection.use_busy_timeout(BUSY_TIMEOUT_MS)
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
