"""The limits of WebSockets, as one pure ASGI middleware in front of the routes: live sockets per
identity (the id in the path, per gateway process) and frames per second per socket; and the
429 answer of a REST submission over its app's limits (gateway.admission)."""

import contextlib
from collections import Counter
from typing import Final

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.admission import LimitExceeded
from gateway.rates import FrameRate
from shared.protocol import CLOSE_POLICY_VIOLATION, ERR_RATE_LIMITED, error_frame
from shared.settings import Settings

SOCKET_PATHS: Final = ("/ws/application/", "/ws/drone/")
TOO_MANY_CONNECTIONS: Final = "too many connections for this id"
FRAME_RATE_KEPT_ON: Final = "frame rate limit exceeded"


class SocketLimits:
    def __init__(self, app: ASGIApp, max_per_identity: int, frames_per_s: float) -> None:
        self.app = app
        self.max_per_identity = max_per_identity
        self.frames_per_s = frames_per_s
        self.live: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "websocket" or not path.startswith(SOCKET_PATHS):
            await self.app(scope, receive, send)
            return
        if self.live[path] >= self.max_per_identity:
            await _refuse(receive, send, TOO_MANY_CONNECTIONS)
            return
        self.live[path] += 1
        try:
            await self.app(scope, _FrameLimited(receive, send, self.frames_per_s), send)
        finally:
            self.live[path] -= 1
            if not self.live[path]:
                del self.live[path]


async def _refuse(receive: Receive, send: Send, reason: str) -> None:
    """Closed with 1008 before any welcome, as a socket the routes refuse."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": CLOSE_POLICY_VIOLATION, "reason": reason})


class _FrameLimited:
    """The socket's `receive`, handing the route only the frames within the limit. Each frame
    over it is answered with an `error` frame (`rate_limited`, `retry_after` in seconds) in
    its place, so no frame goes unanswered; a socket that keeps on is closed with 1008."""

    __slots__ = ("_frames_per_s", "_rate", "closed", "receive", "send")

    def __init__(self, receive: Receive, send: Send, frames_per_s: float) -> None:
        self.receive = receive
        self.send = send
        self._frames_per_s = frames_per_s
        # Made at the first frame: an idle drone may send none for hours, and its bucket would
        # be full then as it is now (bench/connections.py counts memory per idle socket).
        self._rate: FrameRate | None = None
        self.closed = False

    @property
    def rate(self) -> FrameRate:
        if self._rate is None:
            self._rate = FrameRate(self._frames_per_s)
        return self._rate

    async def __call__(self) -> Message:
        while True:
            message = await self.receive()
            if message["type"] != "websocket.receive":
                return message
            if self.closed:
                continue  # frames that were on their way when the close went out
            wait_s = self.rate.admit()
            if not wait_s:
                return message
            await self._refuse(wait_s)

    async def _refuse(self, wait_s: float) -> None:
        # The route may have closed or lost the socket meanwhile: then there is no one to tell.
        with contextlib.suppress(RuntimeError, OSError):
            if self.rate.kept_on:
                self.closed = True
                await self.send(
                    {
                        "type": "websocket.close",
                        "code": CLOSE_POLICY_VIOLATION,
                        "reason": FRAME_RATE_KEPT_ON,
                    }
                )
                return
            frame = error_frame(
                ERR_RATE_LIMITED,
                f"more than {self.rate.limit:g} frames/s: this frame was not handled",
                retry_after=max(0.001, round(wait_s, 3)),
            )
            await self.send({"type": "websocket.send", "text": frame.decode()})


def _limit_exceeded(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LimitExceeded)
    body: dict[str, object] = {"detail": exc.message, "code": exc.code}
    headers = {}
    if exc.retry_after_header is not None:
        body["retry_after"] = exc.retry_after_s
        headers["Retry-After"] = exc.retry_after_header
    return JSONResponse(body, status_code=429, headers=headers)


def install_limits(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(
        SocketLimits,
        max_per_identity=settings.max_connections_per_identity,
        frames_per_s=settings.ws_max_frames_per_s,
    )
    app.add_exception_handler(LimitExceeded, _limit_exceeded)
