"""A StreamWriter stand-in that sends what is written close together in one send().

aiormq writes every frame (a publish, an ack, a consume) with its own `transport.write`, so each
one is a TCP segment that wakes RabbitMQ. Sent together they cost both sides less: in
bench/distributed.py RabbitMQ's CPU per task fell by a fifth and throughput rose by about as
much (see bench/README.md).

Waiting costs latency, so the writer waits only while the connection is busy, which its owner
tells it (the RabbitMQ adapter: more than one publish awaiting its confirm). What is written in
one event-loop iteration always leaves together at its end. While busy, the connection sends at
most once per `window_s`, like Nagle's algorithm with data in flight; otherwise every
iteration's frames leave at once, so a lone request-reply exchange is not held up.
"""

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

HIGH_WATER_BYTES = 64 * 1024
"""Sent at once when this much is waiting, whatever the window."""


class CoalescingWriter:
    def __init__(
        self, writer: asyncio.StreamWriter, window_s: float, busy: Callable[[], bool]
    ) -> None:
        self._writer = writer
        self._window_s = window_s
        self._busy = busy
        self._loop = asyncio.get_running_loop()
        self._chunks: list[bytes] = []
        self._size = 0
        self._flush: asyncio.Handle | None = None
        self._last_send = -math.inf

    def write(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size >= HIGH_WATER_BYTES:
            self.send()
        elif self._flush is None:
            due = self._last_send + self._window_s
            if due > self._loop.time() and self._busy():
                self._flush = self._loop.call_at(due, self.send)
            else:
                self._flush = self._loop.call_soon(self.send)

    def send(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if not self._chunks:
            return
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        self._last_send = self._loop.time()
        if self._writer.is_closing():
            return  # the connection is gone; its reader reports that
        try:
            self._writer.write(data)
        except (OSError, RuntimeError) as e:  # closed under us: the reader reports it too
            log.debug("dropped %d bytes for a closed connection: %r", len(data), e)

    async def drain(self) -> None:
        # Flow control only: what is buffered here leaves within the window.
        await self._writer.drain()

    def write_eof(self) -> None:
        self.send()
        self._writer.write_eof()

    def close(self) -> None:
        self.send()
        self._writer.close()

    def __getattr__(self, name: str) -> Any:
        # is_closing, can_write_eof, wait_closed, transport, get_extra_info: the real writer's.
        return getattr(self._writer, name)
