"""uvicorn's HTTP protocol (httptools) with the limits uvicorn does not have.

uvicorn 0.54 times out only idle keep-alive connections (`timeout_keep_alive`, armed after a
response): a client that sends nothing, or its request head or body a byte at a time, holds
its connection forever (slowloris). It sets no bound on the request target or the head either:
httptools buffers a header of any size, a target of 20 KiB reaches the routes (404) and one
over 64 KiB is a 400 only because httptools.parse_url takes 16-bit offsets. Its
`limit_concurrency` answers 503 per request but counts ASGI tasks and lets every WebSocket
upgrade through. So this subclass adds:
- a head timer, from the connection's first byte (or its start) to the end of the headers: 408;
- a body timer, from the end of the headers to the end of the body: 408;
- request targets over `max_url_bytes` (414) and heads over `max_header_bytes` (431), answered
  as soon as the limit is crossed;
- a cap on this process's connections (HTTP and WebSocket): 503 once the request's head is in.
"""

import asyncio
import resource
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from shared.settings import Settings

OPEN_FILES_RESERVE = 128
"""Descriptors kept for what is not a client: the store, the broker, logs, the listener."""


def raise_open_file_limit() -> int:
    """Lift this process's soft limit on open files to its hard limit, as servers that hold a
    socket per drone must (the soft default is often 1024), and return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return soft


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout_s: float
    body_timeout_s: float
    max_url_bytes: int
    max_header_bytes: int
    max_connections: int

    @classmethod
    def of(cls, settings: Settings) -> "ConnectionLimits":
        return cls(
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            max_url_bytes=settings.max_url_bytes,
            max_header_bytes=settings.max_header_bytes,
            max_connections=settings.max_connections
            or max(1, raise_open_file_limit() - OPEN_FILES_RESERVE),
        )


class _Refused(Exception):
    """Raised in a parser callback to stop parsing; the answer goes out in data_received."""

    def __init__(self, status: int, message: str, *headers: tuple[bytes, bytes]) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class LimitedHttpProtocol(HttpToolsProtocol):
    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._over_cap = False
        self._refused = False

    # --- the connection ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._over_cap = len(self.connections) > self.limits.max_connections
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        # As uvicorn's data_received, but a refusal is answered with its own status, not the
        # 400 (and warning) uvicorn gives every other parser error.
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refusal = exc.__context__
            if not isinstance(refusal, _Refused):
                raise
            self._refuse(refusal)
            return
        except httptools.HttpParserError:
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._head_timer is not None:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse(_Refused(431, "request head too large"))

    # --- parser callbacks -------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > self.limits.max_url_bytes:
            raise _Refused(414, f"request target longer than {self.limits.max_url_bytes} bytes")
        super().on_url(url)

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        if self._over_cap:
            raise _Refused(503, "too many connections", (b"retry-after", b"1"))
        super().on_headers_complete()
        if not (self.parser.should_upgrade() and self._should_upgrade()):
            self._body_timer = self.loop.call_later(
                self.limits.body_timeout_s, self._body_timed_out
            )

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # --- timers and refusals ----------------------------------------------------------------
    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.limits.header_timeout_s, self._head_timed_out
            )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_head_timer()
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self._refuse(_Refused(408, "request head not received in time"))

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        # The route reading the body hears that the client is gone, and writes nothing more.
        cycle.disconnected = True
        cycle.message_event.set()
        if self.pipeline or cycle.response_started:
            self.transport.close()  # an answer now would land inside another response
            return
        self._refuse(_Refused(408, "request body not received in time"))

    def _refuse(self, refusal: _Refused) -> None:
        self._refused = True
        self._cancel_timers()
        if self.transport.is_closing():
            return
        body = refusal.message.encode()
        head = [STATUS_LINE[refusal.status]]
        for name, value in (*self.server_state.default_headers, *refusal.headers):
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def limited_http_protocol(limits: ConnectionLimits) -> type[LimitedHttpProtocol]:
    """The protocol class for uvicorn.Config(http=...), which builds it with uvicorn's own
    arguments: the limits travel as a class attribute."""
    return type("LimitedHttpProtocol", (LimitedHttpProtocol,), {"limits": limits})
