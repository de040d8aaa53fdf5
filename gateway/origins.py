"""Which browser origins may use the gateway: DRONEFLOW_ALLOWED_ORIGINS, plus the gateway's own.

A WebSocket handshake whose Origin is neither is refused (HTTP 403), tokens on or off: a page
on another site must not open sockets in its visitors' names. Clients that send no Origin
(drones, scripts, servers) are not browsers and are not affected. CORS for REST follows the
same list (Starlette's CORSMiddleware, added by create_app)."""

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from shared.protocol import CLOSE_POLICY_VIOLATION


def parse_origins(setting: str) -> frozenset[str]:
    return frozenset(o.strip().rstrip("/").lower() for o in setting.split(",") if o.strip())


def origin_allowed(origin: str, host: str | None, allowed: frozenset[str]) -> bool:
    origin = origin.strip().rstrip("/").lower()
    if origin in allowed or "*" in allowed:
        return True
    if host is None:
        return False
    # The gateway's own origin. A proxy may pass Host without its port (nginx's $host): then
    # the host name alone decides.
    netloc, host = urlsplit(origin).netloc, host.strip().lower()
    if ":" in host.rsplit("]", 1)[-1]:
        return netloc == host
    return (urlsplit(origin).hostname or "") == host.strip("[]")


class OriginCheck:
    """A pure ASGI middleware that refuses WebSocket handshakes from other origins."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            headers = dict(scope["headers"])
            origin = headers.get(b"origin")
            if origin is not None:
                host = headers.get(b"host")
                if not origin_allowed(
                    origin.decode("latin-1"),
                    None if host is None else host.decode("latin-1"),
                    self.allowed,
                ):
                    await receive()  # websocket.connect
                    # A close before accept is answered 403 by the server: the handshake fails.
                    await send(
                        {
                            "type": "websocket.close",
                            "code": CLOSE_POLICY_VIOLATION,
                            "reason": "origin not allowed",
                        }
                    )
                    return
        await self.app(scope, receive, send)
