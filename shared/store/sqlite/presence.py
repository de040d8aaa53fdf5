"""The presence table and its jobs: which drones and applications are connected to which
gateway. Each gateway re-writes its own entries on a heartbeat; a dead gateway's entries
outlive it only until their expires_at."""

import sqlite3
from collections.abc import Sequence
from datetime import timedelta
from typing import Final

import orjson

from shared.clock import format_timestamp, parse_timestamp
from shared.store import Presence, PresenceKind

PRESENCE_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS presence (
        session_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        client_id TEXT NOT NULL,
        gateway TEXT NOT NULL,
        capacity INTEGER NOT NULL,
        held INTEGER NOT NULL,
        connected_at TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        expires_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS ix_presence_kind ON presence (kind, client_id, connected_at)",
)
_UPSERT_SQL: Final = (
    "INSERT INTO presence (session_id, kind, client_id, gateway, capacity, held, connected_at,"
    " last_seen, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (session_id) DO UPDATE SET kind = excluded.kind,"
    " client_id = excluded.client_id, gateway = excluded.gateway,"
    " capacity = excluded.capacity, held = excluded.held, connected_at = excluded.connected_at,"
    " last_seen = excluded.last_seen, expires_at = excluded.expires_at"
)
_PURGE_SQL: Final = "DELETE FROM presence WHERE expires_at < ?"
_REMOVE_SQL: Final = "DELETE FROM presence WHERE session_id IN (SELECT value FROM json_each(?))"
_LIVE_SQL: Final = (
    "SELECT session_id, kind, client_id, gateway, connected_at, last_seen, capacity, held"
    " FROM presence WHERE kind = ? AND expires_at >= ? ORDER BY client_id, connected_at"
)
# ix_tasks_drone_pending leads with (drone_id, status): one short range per drone.
_COUNT_QUEUED_SQL: Final = (
    "SELECT drone_id, count(*) FROM processingTasks"
    " WHERE drone_id IN (SELECT value FROM json_each(?)) AND status = 'pending'"
    " AND delivery = 'queued' GROUP BY drone_id"
)


def put_presence(
    connection: sqlite3.Connection, now: str, entries: Sequence[Presence], ttl_s: float
) -> None:
    expires_at = format_timestamp(parse_timestamp(now) + timedelta(seconds=ttl_s))
    connection.executemany(
        _UPSERT_SQL,
        [
            (
                e.session_id,
                e.kind,
                e.client_id,
                e.gateway,
                e.capacity,
                e.held,
                e.connected_at,
                e.last_seen,
                expires_at,
            )
            for e in entries
        ],
    )
    connection.execute(_PURGE_SQL, (now,))


def remove_presence(connection: sqlite3.Connection, now: str, session_ids: Sequence[str]) -> None:
    connection.execute(_REMOVE_SQL, (orjson.dumps(list(session_ids)).decode(),))


def live_presence(connection: sqlite3.Connection, now: str, kind: PresenceKind) -> list[Presence]:
    return [Presence(*row) for row in connection.execute(_LIVE_SQL, (kind, now))]


def count_queued(
    connection: sqlite3.Connection, now: str, drone_ids: Sequence[str]
) -> dict[str, int]:
    counts = dict.fromkeys(drone_ids, 0)
    rows = connection.execute(_COUNT_QUEUED_SQL, (orjson.dumps(list(drone_ids)).decode(),))
    counts.update((drone_id, n) for drone_id, n in rows)
    return counts
