"""The tables, their indexes and every SQL statement SQLiteTaskStore runs."""

import sqlite3
from typing import Final

from shared.lifecycle import ACTIVE_STATUSES, TaskStatus, sources
from shared.models import ResultRecord, TaskRecord
from shared.store.sqlite.presence import PRESENCE_SCHEMA
from shared.store.sqlite.tokens import TOKEN_SCHEMA

if sqlite3.sqlite_version_info < (3, 35, 0):  # pragma: no cover - depends on the build
    raise ImportError(
        f"SQLiteTaskStore needs SQLite ≥ 3.35 (RETURNING), not {sqlite3.sqlite_version}"
    )

TASK_FIELDS: Final = tuple(TaskRecord.model_fields)
RESULT_FIELDS: Final = tuple(ResultRecord.model_fields)
TASK_COLUMNS: Final = ", ".join(TASK_FIELDS)
# RETURNING hands back a REAL column's integral value (10.0) as an integer, as it is stored on
# disk; SELECT converts it back. Cast, so records read either way compare and encode the same.
_TASK_RETURNING: Final = TASK_COLUMNS.replace(
    "timeout_s, ttl_s", "CAST(timeout_s AS REAL), CAST(ttl_s AS REAL)"
)
_RESULT_COLUMNS: Final = ", ".join(RESULT_FIELDS)


def _status_in(statuses: tuple[TaskStatus, ...]) -> str:
    quoted = ", ".join(f"'{status}'" for status in statuses)
    return f"status IN ({quoted})"


def numbered(*values: object) -> dict[str, object]:
    """Parameters for a statement with numbered placeholders (`?1`), as a mapping: CPython
    3.12.0-3.12.3 took `?1` for a named placeholder and warned when handed a sequence for it
    (gh-117995). With a mapping, sqlite3 looks a `?1` up under "1" on every version."""
    return {str(number): value for number, value in enumerate(values, 1)}


_LIVE: Final = _status_in(ACTIVE_STATUSES)
"""Non-terminal. Spelled identically in queries and partial indexes: SQLite only uses a partial
index when the query repeats its WHERE terms."""
_MAY_START: Final = _status_in(sources("processing"))
_MAY_END_WITH_RESULT: Final = _status_in(sources("completed", "failed"))
_MAY_CANCEL: Final = _status_in(sources("cancelled"))

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
    # count_pending: only the tasks still waiting, so it stays small and cheap to maintain.
    "CREATE INDEX IF NOT EXISTS ix_tasks_app_pending ON processingTasks (app_id)"
    " WHERE status = 'pending'",
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
    *TOKEN_SCHEMA,
    *PRESENCE_SCHEMA,
)

INSERT_TASK_SQL: Final = (
    "INSERT INTO processingTasks (task_id, app_id, drone_id, task_type, input_data, status,"
    " priority, created_at, updated_at, attempts, max_attempts, timeout_s, ttl_s,"
    " idempotency_key, delivery, expires_at)"
    " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, 0, ?, ?, ?, ?, 'queued', ?)"
    " ON CONFLICT DO NOTHING"
)
SELECT_TASK_SQL: Final = f"SELECT {TASK_COLUMNS} FROM processingTasks WHERE task_id = ?"
SELECT_BY_IDEMPOTENCY_KEY_SQL: Final = (
    f"SELECT {TASK_COLUMNS} FROM processingTasks WHERE app_id = ? AND idempotency_key = ?"
)
PENDING_FOR_DRONE_SQL: Final = (
    f"SELECT {TASK_COLUMNS} FROM processingTasks WHERE drone_id = ? AND status = 'pending'"
    " ORDER BY priority DESC, created_at, rowid LIMIT ?"
)
COUNT_PENDING_SQL: Final = (
    "SELECT count(*) FROM (SELECT 1 FROM processingTasks INDEXED BY ix_tasks_app_pending"
    " WHERE app_id = ? AND status = 'pending' LIMIT ?)"
)
APP_PENDING_FOR_DRONE_SQL: Final = (
    f"SELECT {TASK_COLUMNS} FROM processingTasks WHERE drone_id = ? AND status = 'pending'"
    " AND app_id = ? ORDER BY priority DESC, created_at, rowid LIMIT ?"
)
SELECT_RESULT_SQL: Final = f"SELECT {_RESULT_COLUMNS} FROM processingResults WHERE task_id = ?"
RESULTS_FOR_DRONE_SQL: Final = (
    f"SELECT {_RESULT_COLUMNS} FROM processingResults WHERE drone_id = ?"
    " ORDER BY timestamp DESC, rowid DESC LIMIT ?"
)
APP_RESULTS_FOR_DRONE_SQL: Final = (
    "SELECT " + ", ".join(f"r.{field}" for field in RESULT_FIELDS) + " FROM processingResults AS r"
    " JOIN processingTasks AS t ON t.task_id = r.task_id WHERE r.drone_id = ? AND t.app_id = ?"
    " ORDER BY r.timestamp DESC, r.rowid DESC LIMIT ?"
)
MARK_DISPATCHED_SQL: Final = (
    "UPDATE processingTasks SET dispatched_at = ?"
    f" WHERE task_id = ? AND delivery = 'queued' AND {_LIVE} RETURNING {_TASK_RETURNING}"
)
STAMP_DISPATCHED_SQL: Final = (
    "UPDATE processingTasks SET dispatched_at = ?"
    " WHERE task_id IN (SELECT value FROM json_each(?)) AND delivery = 'queued' AND "
    f"{_LIVE}"
)
# INDEXED BY on the sweeps: with no statistics the planner prefers ix_tasks_status to these
# partial indexes, and the clause makes preparing the query fail should one stop matching.
UNDISPATCHED_SQL: Final = (
    f"SELECT {TASK_COLUMNS} FROM processingTasks INDEXED BY ix_tasks_undispatched"
    f" WHERE dispatched_at IS NULL AND delivery = 'queued' AND {_LIVE} AND updated_at < ?"
    " ORDER BY updated_at LIMIT ?"
)
ROUTED_BEFORE_SQL: Final = (
    f"SELECT {TASK_COLUMNS} FROM processingTasks INDEXED BY ix_tasks_routed"
    f" WHERE delivery = 'queued' AND {_LIVE} AND dispatched_at < ?"
    " ORDER BY dispatched_at LIMIT ?"
)
RESET_DISPATCH_SQL: Final = (
    "UPDATE processingTasks SET dispatched_at = NULL"
    f" WHERE dispatched_at IS NOT NULL AND delivery = 'queued' AND {_LIVE}"
)
# A pending task past its ttl is refused, as `expire` will fail it; one a drone already
# started (processing) has outlived its ttl on purpose.
CLAIM_SQL: Final = (
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
    " error_message = CASE WHEN attempts >= max_attempts THEN ?2 || attempts || ?3"
    " ELSE error_message END,"
    " finished_at = CASE WHEN attempts >= max_attempts THEN ?1 ELSE finished_at END,"
    " delivery = 'queued', dispatched_at = NULL, deadline_at = NULL, updated_at = ?1"
)
RELEASE_SQL: Final = (
    f"{_RELEASE_SET} WHERE task_id = ?4 AND drone_id = ?5 AND delivery = 'delivered'"
    f" AND {_LIVE} AND (?6 IS NULL OR attempts = ?6) RETURNING {_TASK_RETURNING}"
)
# ix_tasks_drone_pending leads with drone_id: a drone holds a handful of live tasks at most.
HELD_BY_SQL: Final = (
    f"SELECT {TASK_COLUMNS} FROM processingTasks WHERE drone_id = ?"
    f" AND delivery = 'delivered' AND {_LIVE} ORDER BY delivered_at, rowid"
)
OVERDUE_SQL: Final = (
    f"SELECT {TASK_COLUMNS} FROM processingTasks INDEXED BY ix_tasks_overdue"
    f" WHERE delivery = 'delivered' AND {_LIVE} AND deadline_at < ? ORDER BY deadline_at LIMIT ?"
)
EXPIRE_CANDIDATES_SQL: Final = (
    "SELECT rowid FROM processingTasks INDEXED BY ix_tasks_expire"
    " WHERE status = 'pending' AND delivery = 'queued' AND expires_at < ?3"
    " ORDER BY expires_at LIMIT ?4"
)
EXPIRE_SQL: Final = (
    "UPDATE processingTasks SET status = 'failed', error_code = 'expired', error_message = ?2,"
    " finished_at = ?1, updated_at = ?1"
    f" WHERE rowid IN ({EXPIRE_CANDIDATES_SQL}) RETURNING {_TASK_RETURNING}"
)
APPLY_PROCESSING_SQL: Final = (
    "UPDATE processingTasks SET status = 'processing', started_at = coalesce(started_at, ?1),"
    f" updated_at = ?1 WHERE task_id = ?2 AND drone_id = ?3 AND {_MAY_START}"
    f" RETURNING {_TASK_RETURNING}"
)
END_WITH_RESULT_SQL: Final = (
    "UPDATE processingTasks SET status = ?2, error_code = ?3, error_message = ?4,"
    " finished_at = ?1, updated_at = ?1, deadline_at = NULL"
    f" WHERE task_id = ?5 AND {_MAY_END_WITH_RESULT}"
    f" RETURNING {_TASK_RETURNING}"
)
# ?2 is the result's task_id: the result goes in only while a result may end its task.
INSERT_RESULT_IF_LIVE_SQL: Final = (
    f"INSERT INTO processingResults ({_RESULT_COLUMNS}) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8"
    f" WHERE EXISTS (SELECT 1 FROM processingTasks WHERE task_id = ?2 AND {_MAY_END_WITH_RESULT})"
)
DELETE_RESULT_SQL: Final = "DELETE FROM processingResults WHERE task_id = ?"
CANCEL_SQL: Final = (
    "UPDATE processingTasks SET status = 'cancelled', error_code = 'cancelled',"
    " error_message = ?2, finished_at = ?1, updated_at = ?1, deadline_at = NULL"
    f" WHERE task_id = ?3 AND {_MAY_CANCEL} RETURNING {_TASK_RETURNING}"
)
MARK_NOTIFIED_SQL: Final = (
    "UPDATE processingTasks SET notified_at = ?"
    " WHERE task_id IN (SELECT value FROM json_each(?))"
    " AND notified_at IS NULL AND finished_at IS NOT NULL"
)
_JOINED_COLUMNS: Final = ", ".join(
    [f"t.{field}" for field in TASK_FIELDS] + [f"r.{field}" for field in RESULT_FIELDS]
)
UNNOTIFIED_SQL: Final = (
    f"SELECT {_JOINED_COLUMNS}"
    " FROM processingTasks AS t LEFT JOIN processingResults AS r ON r.task_id = t.task_id"
    " WHERE t.notified_at IS NULL AND t.finished_at IS NOT NULL"
    " ORDER BY t.finished_at, t.task_id LIMIT ?"
)
