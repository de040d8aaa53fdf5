"""The presence tables and their jobs: which drones and applications are connected to which
gateway. Each gateway renews one row of its own on a heartbeat (presence_gateways) and writes
an entry (presence_entries) only when a connection opens, closes or changes; a dead gateway's
entries outlive it only until its row's expires_at.

One row per gateway rather than an expiry per entry: renewing 18,000 entries every heartbeat
held SQLite's one writer for 150-360 ms, and deliveries waited behind it (bench/README.md)."""

import sqlite3
from collections.abc import Sequence
from datetime import timedelta
from typing import Final

import orjson

from shared.clock import format_timestamp, parse_timestamp
from shared.store import Presence, PresenceKind

# New table names rather than the old `presence`, whose entries carried their own expires_at:
# presence is rewritten by every gateway within a heartbeat, so nothing needs migrating.
PRESENCE_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS presence_entries (
        session_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        client_id TEXT NOT NULL,
        gateway TEXT NOT NULL,
        capacity INTEGER NOT NULL,
        held INTEGER NOT NULL,
        connected_at TEXT NOT NULL,
        last_seen TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS ix_presence_entries_kind"
    " ON presence_entries (kind, client_id, connected_at)",
    # For the rare deletes by gateway: a complete write, and the purge of a dead gateway.
    "CREATE INDEX IF NOT EXISTS ix_presence_entries_gateway ON presence_entries (gateway)",
    """CREATE TABLE IF NOT EXISTS presence_gateways (
        gateway TEXT PRIMARY KEY,
        expires_at TEXT NOT NULL
    )""",
)
_UPSERT_SQL: Final = (
    "INSERT INTO presence_entries (session_id, kind, client_id, gateway, capacity, held,"
    " connected_at, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (session_id) DO UPDATE SET kind = excluded.kind,"
    " client_id = excluded.client_id, gateway = excluded.gateway,"
    " capacity = excluded.capacity, held = excluded.held, connected_at = excluded.connected_at,"
    " last_seen = excluded.last_seen"
)
_RENEW_SQL: Final = (
    "INSERT INTO presence_gateways (gateway, expires_at) VALUES (?, ?)"
    " ON CONFLICT (gateway) DO UPDATE SET expires_at = excluded.expires_at"
)
_REMOVE_SQL: Final = (
    "DELETE FROM presence_entries WHERE session_id IN (SELECT value FROM json_each(?))"
)
_KEEP_ONLY_SQL: Final = (
    "DELETE FROM presence_entries WHERE gateway = ?"
    " AND session_id NOT IN (SELECT value FROM json_each(?))"
)
# presence_gateways holds a row per gateway, so finding the expired ones is a scan of a few rows.
_PURGE_ENTRIES_SQL: Final = (
    "DELETE FROM presence_entries"
    " WHERE gateway IN (SELECT gateway FROM presence_gateways WHERE expires_at < ?)"
)
_PURGE_GATEWAYS_SQL: Final = "DELETE FROM presence_gateways WHERE expires_at < ?"
_LIVE_SQL: Final = (
    "SELECT e.session_id, e.kind, e.client_id, e.gateway, e.connected_at, e.last_seen,"
    " e.capacity, e.held FROM presence_entries AS e"
    " JOIN presence_gateways AS g ON g.gateway = e.gateway"
    " WHERE e.kind = ? AND g.expires_at >= ? ORDER BY e.client_id, e.connected_at"
)
# ix_tasks_drone_pending leads with (drone_id, status): one short range per drone.
_COUNT_QUEUED_SQL: Final = (
    "SELECT drone_id, count(*) FROM processingTasks"
    " WHERE drone_id IN (SELECT value FROM json_each(?)) AND status = 'pending'"
    " AND delivery = 'queued' GROUP BY drone_id"
)


def put_presence(
    connection: sqlite3.Connection,
    now: str,
    gateway: str,
    entries: Sequence[Presence],
    ttl_s: float,
    gone: Sequence[str],
    complete: bool,
) -> None:
    connection.execute(_PURGE_ENTRIES_SQL, (now,))
    connection.execute(_PURGE_GATEWAYS_SQL, (now,))
    if complete:
        named = orjson.dumps([e.session_id for e in entries]).decode()
        connection.execute(_KEEP_ONLY_SQL, (gateway, named))
    if gone:
        connection.execute(_REMOVE_SQL, (orjson.dumps(list(gone)).decode(),))
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
            )
            for e in entries
        ],
    )
    expires_at = format_timestamp(parse_timestamp(now) + timedelta(seconds=ttl_s))
    connection.execute(_RENEW_SQL, (gateway, expires_at))


def live_presence(connection: sqlite3.Connection, now: str, kind: PresenceKind) -> list[Presence]:
    return [Presence(*row) for row in connection.execute(_LIVE_SQL, (kind, now))]


def count_queued(
    connection: sqlite3.Connection, now: str, drone_ids: Sequence[str]
) -> dict[str, int]:
    counts = dict.fromkeys(drone_ids, 0)
    rows = connection.execute(_COUNT_QUEUED_SQL, (orjson.dumps(list(drone_ids)).decode(),))
    counts.update((drone_id, n) for drone_id, n in rows)
    return counts
