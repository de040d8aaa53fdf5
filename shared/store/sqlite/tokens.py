"""The token bookkeeping of SQLiteTaskStore: its table, statements and jobs."""

import sqlite3
from collections.abc import Sequence
from typing import Any, Final

import orjson

from shared.store import TokenRecord

TOKEN_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS issuedTokens (
        jti TEXT NOT NULL PRIMARY KEY,
        sub TEXT,
        role TEXT,
        drones TEXT,
        issued_at TEXT,
        expires_at TEXT,
        revoked_at TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS ix_tokens_revoked ON issuedTokens (revoked_at)"
    " WHERE revoked_at IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS ix_tokens_issued ON issuedTokens (issued_at, jti)",
)

_COLUMNS: Final = "jti, sub, role, drones, issued_at, expires_at, revoked_at"
RECORD_SQL: Final = (
    "INSERT INTO issuedTokens (jti, sub, role, drones, issued_at, expires_at)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (jti) DO UPDATE SET sub = excluded.sub,"
    " role = excluded.role, drones = excluded.drones, issued_at = excluded.issued_at,"
    " expires_at = excluded.expires_at"
)
REVOKE_SQL: Final = (
    "INSERT INTO issuedTokens (jti, revoked_at) VALUES (?, ?)"
    " ON CONFLICT (jti) DO UPDATE SET revoked_at = coalesce(revoked_at, excluded.revoked_at)"
    f" RETURNING {_COLUMNS}"
)
LIST_SQL: Final = f"SELECT {_COLUMNS} FROM issuedTokens ORDER BY issued_at DESC, jti DESC LIMIT ?"
REVOKED_SQL: Final = "SELECT 1 FROM issuedTokens WHERE jti = ? AND revoked_at IS NOT NULL"
REVOKED_SINCE_SQL: Final = (
    "SELECT jti FROM issuedTokens WHERE revoked_at IS NOT NULL AND revoked_at >= ?"
    " ORDER BY revoked_at"
)


def _to_token(row: Sequence[Any]) -> TokenRecord:
    jti, sub, role, drones, issued_at, expires_at, revoked_at = row
    return TokenRecord(
        jti=jti,
        sub=sub,
        role=role,
        drones=None if drones is None else tuple(orjson.loads(drones)),
        issued_at=issued_at,
        expires_at=expires_at,
        revoked_at=revoked_at,
    )


def record_token(connection: sqlite3.Connection, now: str, token: TokenRecord) -> None:
    drones = None if token.drones is None else orjson.dumps(list(token.drones)).decode()
    connection.execute(
        RECORD_SQL,
        (token.jti, token.sub, token.role, drones, token.issued_at, token.expires_at),
    )


def revoke_token(connection: sqlite3.Connection, now: str, jti: str) -> TokenRecord:
    return _to_token(connection.execute(REVOKE_SQL, (jti, now)).fetchall()[0])


def list_tokens(connection: sqlite3.Connection, now: str, limit: int) -> list[TokenRecord]:
    return [_to_token(row) for row in connection.execute(LIST_SQL, (limit,))]


def token_revoked(connection: sqlite3.Connection, now: str, jti: str) -> bool:
    return connection.execute(REVOKED_SQL, (jti,)).fetchone() is not None


def revoked_since(connection: sqlite3.Connection, now: str, since: str) -> list[str]:
    return [row[0] for row in connection.execute(REVOKED_SINCE_SQL, (since,))]
