"""The WebSocket transport that joins one loop iteration's writes: the bytes arrive complete and
in the order written, in fewer sends, and a close sends what waits before the socket closes."""

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from gateway.coalescing import HIGH_WATER_BYTES, CoalescingTransport

TIMEOUT_S = 10.0


class _Sink(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.arrived = asyncio.Event()
        self.closed = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _Writes:
    """Counts the writes that reach the real transport (a real socket's)."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.count = 0
        self._write = transport.write

    def __call__(self, data: bytes | bytearray | memoryview) -> None:
        self.count += 1
        self._write(data)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[CoalescingTransport, _Writes, _Sink]]:
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    _, sink = await loop.create_connection(_Sink, sock=theirs)
    writes = _Writes(transport)  # type: ignore[arg-type]
    transport.write = writes  # type: ignore[method-assign]
    yield CoalescingTransport(transport), writes, sink  # type: ignore[arg-type]
    transport.close()


async def _received(sink: _Sink, size: int) -> bytes:
    async with asyncio.timeout(TIMEOUT_S):
        while len(sink.data) < size:
            sink.arrived.clear()
            await sink.arrived.wait()
    return bytes(sink.data)


async def test_coalescing_transport_sends_one_iterations_writes_in_order_in_one_send(
    pair: tuple[CoalescingTransport, _Writes, _Sink],
) -> None:
    coalescing, writes, sink = pair
    # Given frames written within one loop iteration
    frames = [f"frame {i};".encode() for i in range(50)]
    for frame in frames:
        coalescing.write(frame)
    # When the loop runs on
    expected = b"".join(frames)
    # Then they arrive whole and in order, handed to the socket in one write
    assert await _received(sink, len(expected)) == expected
    assert writes.count == 1


async def test_coalescing_transport_sends_writes_of_later_iterations_after_earlier_ones(
    pair: tuple[CoalescingTransport, _Writes, _Sink],
) -> None:
    coalescing, writes, sink = pair
    # Given writes spread over several iterations, one of them past the high-water mark
    big = b"x" * HIGH_WATER_BYTES
    parts = [b"a", b"b", big, b"c", b"d"]
    coalescing.write(parts[0])
    await asyncio.sleep(0)
    coalescing.write(parts[1])
    coalescing.write(parts[2])  # sent at once with what waited before it
    coalescing.write(parts[3])
    await asyncio.sleep(0)
    coalescing.write(parts[4])
    # Then every byte arrives in the order written
    expected = b"".join(parts)
    assert await _received(sink, len(expected)) == expected
    assert writes.count == 4  # a | b and the big one | c | d


async def test_coalescing_transport_close_sends_what_waits_first(
    pair: tuple[CoalescingTransport, _Writes, _Sink],
) -> None:
    coalescing, _, sink = pair
    # Given a frame written and a close in the same iteration (a close frame, then the close)
    coalescing.write(b"closing frame")
    coalescing.close()
    # Then the peer gets the frame before the connection ends
    async with asyncio.timeout(TIMEOUT_S):
        await sink.closed
    assert bytes(sink.data) == b"closing frame"
    assert coalescing.is_closing()
