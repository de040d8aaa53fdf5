"""uvicorn's WebSocket protocol (websockets-sansio), with two changes:

- A handshake that websockets refuses while parsing it (a request line over 8 KiB: 414; header
  fields too large: 431) queues its answer in the protocol object, but uvicorn only writes
  answers for requests that parsed, so the client waited with no reply until its own timeout.
- Its receive queue (an asyncio.Queue: three deques and an Event) and its `writable` Event
  (a deque) cost ~3 kB per socket before any frame arrives; an idle drone socket holds them
  for hours. The ones here allocate nothing until a frame waits or a reader blocks.

And its transport is wrapped in a CoalescingTransport: the frames of one loop iteration leave in
one send (gateway/coalescing.py).
"""

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import Protocol, State

from gateway.coalescing import CoalescingTransport


class _ReceiveQueue:
    """What uvicorn uses of asyncio.Queue, for its one reader: the ASGI app's `receive`."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class _Flag:
    """What uvicorn uses of asyncio.Event for `writable`."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter


class WebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _ReceiveQueue()  # type: ignore[assignment]
        writable = _Flag()
        writable.set()
        self.writable = writable  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.transport = CoalescingTransport(self.transport)  # type: ignore[assignment]

    def start_keepalive(self) -> None:
        # uvicorn calls this once the accept response is written: the handshake's request and
        # response (their headers, ~3 kB) are not read again, and an idle socket lives long.
        self.request = self.response = None  # type: ignore[assignment]
        conn = self.conn
        reader = conn.reader
        if conn.state is State.OPEN and not reader.buffer and not reader.eof:
            # websockets' server parser keeps the parsed Request as a local of its generator
            # for the connection's life, then runs the frame parser. While no byte of a frame
            # has arrived that parser waits at its start, as a fresh one does; swapped as
            # websockets itself swaps in discard() at a close.
            conn.parser = Protocol.parse(conn)
            next(conn.parser)
        super().start_keepalive()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.handshake_exc is not None and not self.handshake_initiated:
            refusal = self.conn.data_to_send()
            if refusal:
                self.transport.write(b"".join(refusal))
            self.transport.close()
