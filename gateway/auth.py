"""Who is asking (authentication) and what they may do (authorization), with tokens on.

`Authenticator` turns a bearer token into an `Identity`: signature, algorithm and dates are
checked by shared.tokens, revocation by the store on every request and socket. With tokens
off (`keys` None) there is no identity, and every rule below allows everything, so a gateway
without tokens behaves exactly as before.

The rules are small functions the routes call. A refusal the caller may learn about raises
`Forbidden` (REST 403, WS error `forbidden`); where even the existence of a task must not be
confirmed, the rule answers False and the route says 404 / unknown_task, as for a missing task.

Live sockets are watched: a token that expires closes its sockets at `exp`, and one revoked
closes them within REVOCATION_POLL_S (+ the store's answer time), both with 1008.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from starlette.websockets import WebSocket

from shared.clock import format_timestamp
from shared.errors import TRANSIENT_ERRORS
from shared.models import TaskRecord
from shared.protocol import CLOSE_POLICY_VIOLATION, CLOSE_TRY_AGAIN_LATER
from shared.store import TaskStore
from shared.tokens import Identity, InvalidToken, Role, TokenKeys

log = logging.getLogger(__name__)

REVOCATION_POLL_S: Final = 1.0
REVOCATION_LOOKBACK_S: Final = 60.0
"""Each poll asks for revocations since its previous one less this much, so a revocation
committed late, or stamped by a clock a little behind, is still seen."""
TOKEN_QUERY_PARAM: Final = "token"


class Forbidden(Exception):
    """A valid token, but this action is not allowed for it: REST 403, WS error `forbidden`."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a socket is closed before its welcome, and with which close code."""

    reason: str
    code: int = CLOSE_POLICY_VIOLATION


class Authenticator:
    def __init__(self, keys: TokenKeys | None, store: TaskStore) -> None:
        self.keys = keys
        self.store = store
        self.live = LiveSockets()

    @property
    def enabled(self) -> bool:
        return self.keys is not None

    async def identify(self, token: str | None) -> Identity:
        """The identity of a token that verifies and is not revoked; InvalidToken otherwise.
        Store failures propagate (StoreUnavailable: answered 503 / 1013)."""
        if self.keys is None:
            raise RuntimeError("identify() with tokens off")
        if not token:
            raise InvalidToken("a bearer token is required")
        identity = self.keys.verify(token)
        if await self.store.token_revoked(identity.jti):
            raise InvalidToken("invalid token: revoked")
        return identity

    async def admit(
        self, websocket: WebSocket, role: Role, client_id: str
    ) -> tuple[Identity | None, Refusal | None]:
        """The identity a socket connects as, or why it is refused. The token comes from the
        Authorization header, or `?token=` (browsers cannot set headers on a WebSocket)."""
        if self.keys is None:
            return None, None
        try:
            identity = await self.identify(_socket_token(websocket))
        except InvalidToken as exc:
            return None, Refusal(str(exc))
        except TRANSIENT_ERRORS:
            return None, Refusal("backend unavailable, reconnect later", CLOSE_TRY_AGAIN_LATER)
        if identity.role != role or identity.sub != client_id:
            return identity, Refusal(f"this token is not for a {role} socket of {client_id!r}")
        if identity.expires_at <= time.time():  # within the verifier's leeway, but expired
            return identity, Refusal("invalid token: expired")
        return identity, None

    async def watch_revocations(self) -> None:
        """Close the live sockets of tokens revoked anywhere, polling the store (run by the
        app's lifespan while tokens are on)."""
        polled_at = time.time()
        while True:
            await asyncio.sleep(REVOCATION_POLL_S)
            since = datetime.fromtimestamp(polled_at - REVOCATION_LOOKBACK_S, UTC)
            polled_at = time.time()
            try:
                revoked = await self.store.revoked_since(format_timestamp(since))
            except TRANSIENT_ERRORS as exc:
                log.warning("revocation check skipped: %s", exc)
                continue
            for jti in revoked:
                await self.live.close_token(jti, "token revoked")


def _socket_token(websocket: WebSocket) -> str | None:
    header = websocket.headers.get("authorization")
    if header is not None:
        scheme, _, credentials = header.partition(" ")
        return credentials.strip() if scheme.lower() == "bearer" else None
    return websocket.query_params.get(TOKEN_QUERY_PARAM)


class LiveSockets:
    """The open sockets of each token on this gateway, to close on revocation or expiry."""

    def __init__(self) -> None:
        self._by_jti: dict[str, set[WebSocket]] = {}
        self._closing: set[asyncio.Task[None]] = set()  # referenced until done

    def watch(self, identity: Identity, websocket: WebSocket) -> Callable[[], None]:
        """Start watching; returns the function that stops it (call it when the socket ends)."""
        sockets = self._by_jti.setdefault(identity.jti, set())
        sockets.add(websocket)
        delay = max(0.0, identity.expires_at - time.time())
        expiry = asyncio.get_running_loop().call_later(delay, self._expire, websocket)

        def unwatch() -> None:
            expiry.cancel()
            sockets.discard(websocket)
            if not sockets and self._by_jti.get(identity.jti) is sockets:
                del self._by_jti[identity.jti]

        return unwatch

    def _expire(self, websocket: WebSocket) -> None:
        closing = asyncio.create_task(_close(websocket, "token expired"))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def close_token(self, jti: str, reason: str) -> int:
        sockets = list(self._by_jti.get(jti, ()))
        for websocket in sockets:
            await _close(websocket, reason)
        return len(sockets)


async def _close(websocket: WebSocket, reason: str) -> None:
    # The socket may be closing already; its own receive loop then ends the session.
    with contextlib.suppress(Exception):
        await websocket.close(CLOSE_POLICY_VIOLATION, reason)


# --- the rules -------------------------------------------------------------------------------
# `identity` None means tokens are off: everything is allowed, as before tokens existed.


def check_submit(identity: Identity | None, app_id: str, drone_id: str) -> None:
    """POST a task (REST or WS): the app itself, for a drone its patterns allow; or admin."""
    if identity is None or identity.role == "admin":
        return
    if identity.role != "app" or identity.sub != app_id:
        raise Forbidden(f"this token may not submit tasks for application {app_id!r}")
    if not identity.may_task(drone_id):
        raise Forbidden(f"this token may not send tasks to drone {drone_id!r}")


def may_see(identity: Identity | None, task: TaskRecord) -> bool:
    """Read a task or its result: the owning app, the drone it is assigned to, admin."""
    if identity is None or identity.role == "admin":
        return True
    if identity.role == "app":
        return task.app_id == identity.sub
    return task.drone_id == identity.sub


def may_cancel(identity: Identity | None, task: TaskRecord) -> bool:
    """Cancel: the owning app, admin."""
    if identity is None or identity.role == "admin":
        return True
    return identity.role == "app" and task.app_id == identity.sub


def listed_app(identity: Identity | None, app_id: str | None) -> str | None:
    """The app_id a task listing is limited to: an app sees its own (the default), admin any."""
    if identity is None or identity.role == "admin":
        return app_id
    if identity.role != "app":
        raise Forbidden("only applications and admins list tasks")
    if app_id is not None and app_id != identity.sub:
        raise Forbidden(f"this token may not list the tasks of application {app_id!r}")
    return identity.sub


def drone_view(identity: Identity | None, drone_id: str) -> str | None:
    """A drone's pending tasks and results: that drone and admin see all of them (None: no
    filter), an app only its own tasks (its app_id); another drone nothing."""
    if identity is None or identity.role == "admin":
        return None
    if identity.role == "app":
        return identity.sub
    if identity.sub != drone_id:
        raise Forbidden(f"this token may not read drone {drone_id!r}")
    return None


def may_read_metrics(identity: Identity | None) -> None:
    if identity is not None and identity.role != "admin":
        raise Forbidden("metrics need an admin token")
