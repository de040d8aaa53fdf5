"""Counts what the gateway refuses: HTTP answers 4xx by status code, WebSocket `error` frames by
their `code`, and sockets closed as a refusal by their close code. One pure ASGI middleware,
outermost, so that the refusals of the other middlewares (413, 403, 429, `rate_limited`
frames, 1008 for too many sockets) are counted with those of the routes. Refusals made before a
request reaches the app (408, 414, 431 from gateway.http_protocol; frames over the size limit,
which uvicorn closes with 1009) are not seen here."""

from typing import Final

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.metrics import rejected
from shared.protocol import (
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TRY_AGAIN_LATER,
    ERROR,
)

ERROR_FRAME_START: Final = orjson.dumps({"type": ERROR})[:-1].decode()
"""How every `error` frame begins: shared.protocol.error_frame puts `type` first. Other frames
are told apart by this prefix alone, and only error frames are parsed."""
REFUSING_CLOSES: Final = {
    CLOSE_POLICY_VIOLATION: "close_policy_violation",
    CLOSE_MESSAGE_TOO_BIG: "close_message_too_big",
    CLOSE_TRY_AGAIN_LATER: "close_try_again_later",
}
"""Close codes that refuse a client (bad id or token, over a limit, a dependency away), as
opposed to a normal end, a shutdown or a superseded session."""


class RejectionCount:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":

            async def counting_http_send(message: Message) -> None:
                if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
                    rejected("http", str(message["status"]))
                await send(message)

            await self.app(scope, receive, counting_http_send)
        elif kind == "websocket":

            async def counting_ws_send(message: Message) -> None:
                text = message.get("text")
                if text is not None:
                    if text.startswith(ERROR_FRAME_START):
                        rejected("websocket", str(orjson.loads(text).get("code")))
                elif message["type"] == "websocket.close":
                    refusal = REFUSING_CLOSES.get(message.get("code", 1000))
                    if refusal is not None:
                        rejected("websocket", refusal)
                await send(message)

            await self.app(scope, receive, counting_ws_send)
        else:
            await self.app(scope, receive, send)
