"""A WebSocket's transport that sends the frames written in one event-loop iteration together.

uvicorn writes every outgoing frame with its own `transport.write`, and uvloop makes that a
send() syscall at once: under load, an application socket gets dozens of results per loop
iteration and a drone socket a few tasks, each its own syscall (a tenth of the gateway's CPU
in `py-spy record --gil`). Here the writes of one iteration are joined and leave in one send
from a callback queued behind them, so nothing waits past the iteration that wrote it: a lone
frame leaves as soon as before, give or take the callbacks already queued.

Order is kept (one buffer per socket, sent before anything written after it), and `close`
sends what is buffered before the transport closes, as a direct write would have.
"""

import asyncio
from typing import Any, Final

HIGH_WATER_BYTES: Final = 64 * 1024
"""Sent at once when this much waits, so a burst does not sit in memory until the callback."""


class CoalescingTransport:
    """What uvicorn's WebSocket protocol uses of its transport; anything else is the real one's."""

    __slots__ = ("_chunks", "_flush", "_size", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        # None while nothing waits: an idle socket keeps no list.
        self._chunks: list[bytes] | None = None
        self._size = 0
        self._flush: asyncio.Handle | None = None

    def write(self, data: bytes) -> None:
        if self._chunks is None:
            self._chunks = [data]
            self._flush = asyncio.get_running_loop().call_soon(self.send)
        else:
            self._chunks.append(data)
        self._size += len(data)
        if self._size >= HIGH_WATER_BYTES:
            self.send()

    def send(self) -> None:
        """Hand everything buffered to the real transport now."""
        chunks, self._chunks, self._size = self._chunks, None, 0
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if chunks and not self.transport.is_closing():
            self.transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def close(self) -> None:
        self.send()
        self.transport.close()

    def abort(self) -> None:
        self._chunks, self._size = None, 0
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self.transport.abort()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._size + self.transport.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:
        # pause_reading, resume_reading, get_extra_info, set_write_buffer_limits, …
        return getattr(self.transport, name)
