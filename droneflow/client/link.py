"""One WebSocket that comes back after every drop: the transport under AppClient and DroneWorker.

A link reconnects with exponential backoff and full jitter, so a fleet that lost its server
does not return in one wave. It stops for good only when the server says another attempt
would not help: a refused handshake (401, 403, 404), a close with 1008 before the welcome, or a
drone socket superseded by a newer one (4000).
"""

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from droneflow.client.errors import ConnectionRefused, FrameTooLarge, Superseded
from shared.protocol import CLOSE_POLICY_VIOLATION, CLOSE_SUPERSEDED, CONNECTION_ESTABLISHED

log = logging.getLogger("droneflow.client")

FATAL_HANDSHAKE_STATUSES: Final = frozenset({401, 403, 404})
WELCOME_TIMEOUT_S: Final = 10.0
MAX_FRAME_BYTES: Final = 16 * 1024 * 1024

Frame = dict[str, Any]


def endpoints(url: str) -> tuple[str, str]:
    """(http base, ws base) of a server given by either: `http://host:8000` or `ws://...`."""
    parts = urlsplit(url.rstrip("/"))
    schemes = {"http": ("http", "ws"), "https": ("https", "wss")}
    schemes |= {"ws": schemes["http"], "wss": schemes["https"]}
    if parts.scheme not in schemes:
        raise ValueError(f"url must start with http://, https://, ws:// or wss://, not {url!r}")
    http, ws = schemes[parts.scheme]
    return urlunsplit(parts._replace(scheme=http)), urlunsplit(parts._replace(scheme=ws))


def auth_headers(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


@dataclass
class Backoff:
    """Delays of 2^n * initial_s capped at max_s, each drawn uniformly below that bound."""

    initial_s: float = 0.1
    max_s: float = 5.0
    attempt: int = 0

    def next_delay_s(self) -> float:
        bound = min(self.max_s, self.initial_s * 2**self.attempt)
        self.attempt += 1
        return random.uniform(0, bound)

    def reset(self) -> None:
        self.attempt = 0


class Link:
    """Connects to `url`, calls `on_connect(welcome)` once per connection, then `on_frame` for
    every frame in order, and `on_close(close_code)` when that connection ends. `connected` is
    set while frames can be sent."""

    def __init__(
        self,
        url: str,
        token: str | None,
        on_frame: Callable[[Frame], Awaitable[None]],
        on_connect: Callable[[Frame], Awaitable[None]] | None = None,
        backoff: Backoff | None = None,
        on_close: Callable[[int | None], None] | None = None,
    ) -> None:
        self.url = url
        self.connected = asyncio.Event()
        self.generation = 0
        """Counts connections; a request sent on an older one must be sent again."""
        self.fatal: Exception | None = None
        self.max_frame_bytes: int | None = None
        """The gateway's frame limit, as its last welcome named it (None when it names none)."""
        self._headers = auth_headers(token)
        self._on_frame = on_frame
        self._on_connect = on_connect
        self._on_close = on_close
        self._backoff = backoff or Backoff()
        self._socket: ClientConnection | None = None
        self._closing = False
        self._gone = asyncio.Event()  # set when the link stopped for good

    async def run(self) -> None:
        """Until close() or a fatal refusal, which it raises."""
        try:
            while not self._closing:
                try:
                    await self._session()
                except (ConnectionRefused, Superseded) as exc:
                    self.fatal = exc
                    raise
                except (OSError, TimeoutError, WebSocketException) as exc:
                    log.info("%s: connection lost (%s), reconnecting", self.url, exc)
                if self._closing:
                    return
                await asyncio.sleep(self._backoff.next_delay_s())
        finally:
            self._gone.set()

    async def _session(self) -> None:
        try:
            socket = await connect(
                self.url, additional_headers=self._headers, max_size=MAX_FRAME_BYTES
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in FATAL_HANDSHAKE_STATUSES:
                raise ConnectionRefused(f"{self.url}: the server answered {status}") from None
            raise
        async with socket:
            welcome = await self._welcome(socket)
            limit = welcome.get("max_frame_bytes")
            self.max_frame_bytes = limit if isinstance(limit, int) and limit > 0 else None
            self._socket = socket
            self.generation += 1
            self._backoff.reset()
            self.connected.set()
            try:
                if self._on_connect is not None:
                    await self._on_connect(welcome)
                async for raw in socket:
                    await self._dispatch(raw)
            finally:
                self.connected.clear()
                self._socket = None
                if self._on_close is not None:
                    self._on_close(socket.close_code)
            self._raise_if_final(socket, welcomed=True)

    async def _dispatch(self, raw: str | bytes) -> None:
        # One odd frame (not JSON, or one the callback cannot handle) must not end the link.
        try:
            frame = orjson.loads(raw)
            if isinstance(frame, dict):
                await self._on_frame(frame)
        except Exception:
            log.exception("%s: could not handle a frame: %.200r", self.url, raw)

    async def _welcome(self, socket: ClientConnection) -> Frame:
        try:
            async with asyncio.timeout(WELCOME_TIMEOUT_S):
                frame: Frame = orjson.loads(await socket.recv())
        except ConnectionClosed:
            self._raise_if_final(socket, welcomed=False)
            raise
        if frame.get("type") != CONNECTION_ESTABLISHED:
            raise ConnectionRefused(f"{self.url}: expected a welcome, got {frame.get('type')!r}")
        return frame

    def _raise_if_final(self, socket: ClientConnection, *, welcomed: bool) -> None:
        code, reason = socket.close_code, socket.close_reason
        if code == CLOSE_SUPERSEDED:
            raise Superseded(f"{self.url}: {reason or 'replaced by a newer connection'}")
        if code == CLOSE_POLICY_VIOLATION and not welcomed:
            raise ConnectionRefused(f"{self.url}: {reason or 'refused (1008)'}")

    async def send(self, frame: Frame | bytes) -> bool:
        """Send a frame (or one encoded already) on the current connection; False when there is
        none or it dropped meanwhile. Raises FrameTooLarge for one over the gateway's limit."""
        socket = self._socket
        if socket is None:
            return False
        encoded = frame if isinstance(frame, bytes) else orjson.dumps(frame)
        if self.max_frame_bytes is not None and len(encoded) > self.max_frame_bytes:
            raise FrameTooLarge(len(encoded), self.max_frame_bytes)
        try:
            await socket.send(encoded.decode())
        except ConnectionClosed:
            return False
        return True

    async def wait_connected(self) -> None:
        """Until a connection is up; raises the fatal error if the link gave up."""
        if self.fatal is not None:
            raise self.fatal
        waiters = [asyncio.ensure_future(self.connected.wait())]
        waiters.append(asyncio.ensure_future(self._gone.wait()))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if not self.connected.is_set():
            raise self.fatal or ConnectionRefused(f"{self.url}: the client is closed")

    async def close(self) -> None:
        self._closing = True
        socket = self._socket
        if socket is not None:
            with contextlib.suppress(ConnectionClosed, OSError):
                await socket.close()
