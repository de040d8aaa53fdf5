"""Counts what the gateway refuses: HTTP answers 4xx by status code, WebSocket `error` frames by
their `code`. One pure ASGI middleware, outermost, so that the refusals of the other
middlewares (413, 403, 429, `rate_limited` frames) are counted with those of the routes.
Refusals made before a request reaches the app (408, 414, 431 from gateway.http_protocol) are
not seen here."""

from typing import Final

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.metrics import rejected
from shared.protocol import ERROR

ERROR_FRAME_START: Final = orjson.dumps({"type": ERROR})[:-1].decode()
"""How every `error` frame begins: shared.protocol.error_frame puts `type` first. Other frames
are told apart by this prefix alone, and only error frames are parsed."""


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
                if text is not None and text.startswith(ERROR_FRAME_START):
                    rejected("websocket", str(orjson.loads(text).get("code")))
                await send(message)

            await self.app(scope, receive, counting_ws_send)
        else:
            await self.app(scope, receive, send)
