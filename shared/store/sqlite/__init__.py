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

from shared.store.sqlite.jobs import CANCELLED_MESSAGE, EXPIRED_MESSAGE
from shared.store.sqlite.schema import (
    EXPIRE_CANDIDATES_SQL,
    OVERDUE_SQL,
    PENDING_FOR_DRONE_SQL,
    RESULTS_FOR_DRONE_SQL,
    ROUTED_BEFORE_SQL,
    SCHEMA,
    UNDISPATCHED_SQL,
    UNNOTIFIED_SQL,
)
from shared.store.sqlite.store import SQLiteTaskStore

__all__ = [
    "CANCELLED_MESSAGE",
    "EXPIRED_MESSAGE",
    "EXPIRE_CANDIDATES_SQL",
    "OVERDUE_SQL",
    "PENDING_FOR_DRONE_SQL",
    "RESULTS_FOR_DRONE_SQL",
    "ROUTED_BEFORE_SQL",
    "SCHEMA",
    "UNDISPATCHED_SQL",
    "UNNOTIFIED_SQL",
    "SQLiteTaskStore",
]
