"""The SQLite worker's busy timeout: write batches take the write lock by polling with none, and
reads keep SQLite's own handler, however the batches alternate; the timeout is switched only
when the kind of batch changes, not twice in every write batch."""

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from shared.store.sqlite import worker as sqlite_worker


def busy_timeout(connection: sqlite3.Connection, now: str) -> int:
    timeout: int = connection.execute("PRAGMA busy_timeout").fetchone()[0]
    return timeout


def insert_token(connection: sqlite3.Connection, now: str, jti: str) -> None:
    connection.execute("INSERT INTO issuedTokens (jti, revoked_at) VALUES (?, ?)", (jti, now))


def run(connection: Any, job: Any, *args: Any, writes: bool) -> Any:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    [(_, ok, value)] = sqlite_worker._run_batch(connection, [(job, args, future, writes)])
    assert ok, value
    return value


async def test_sqlite_reads_wait_with_sqlites_busy_timeout_after_writes(tmp_path: Path) -> None:
    connection = sqlite_worker._connect(tmp_path / "store.db")
    try:
        assert run(connection, busy_timeout, writes=False) == sqlite_worker.BUSY_TIMEOUT_MS
        # A write batch runs without a handler, itself included: it polls for the lock.
        assert run(connection, busy_timeout, writes=True) == 0
        run(connection, insert_token, "jti-1", writes=True)
        assert run(connection, busy_timeout, writes=False) == sqlite_worker.BUSY_TIMEOUT_MS
        assert run(connection, busy_timeout, writes=True) == 0
    finally:
        connection.close()


async def test_sqlite_write_batches_in_a_row_leave_the_busy_timeout_alone(
    tmp_path: Path,
) -> None:
    connection = sqlite_worker._connect(tmp_path / "store.db")
    statements: list[str] = []
    try:
        run(connection, insert_token, "jti-0", writes=True)
        connection.set_trace_callback(statements.append)
        for n in range(1, 4):
            run(connection, insert_token, f"jti-{n}", writes=True)
    finally:
        connection.close()
    assert [s for s in statements if "busy_timeout" in s] == []
    assert statements.count("BEGIN IMMEDIATE") == 3
    assert statements.count("COMMIT") == 3
