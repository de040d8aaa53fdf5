"""Limits of the HTTP layer, over raw TCP: a client that sends its head or body too slowly is
cut off, a request target that is too long or a head too large is refused at once, and a
process's connections are capped. Another client is served normally throughout."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import websockets

from tests.e2e.clients import WsClient
from tests.e2e.conftest import Server

StartServer = Callable[..., Awaitable[Server]]
HANG_GUARD_S = 30.0


@contextlib.asynccontextmanager
async def raw_connection(
    server: Server,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    port = int(server.base_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def status_of(reader: asyncio.StreamReader) -> int:
    line = await asyncio.wait_for(reader.readline(), HANG_GUARD_S)
    return int(line.split()[1])


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    with contextlib.suppress(ConnectionResetError):
        await asyncio.wait_for(reader.read(), HANG_GUARD_S)
    return reader.at_eof()


async def healthy(server: Server) -> bool:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        return (await http.get("/healthz")).status_code == 200


async def test_a_client_sending_its_head_a_byte_at_a_time_is_cut_off_with_408(
    server_factory: StartServer,
) -> None:
    server = await server_factory(header_timeout_s=1.0)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"s" * 400 + b"\r\n\r\n"
    async with raw_connection(server) as (reader, writer):
        answer = asyncio.ensure_future(status_of(reader))
        sent = 0
        # It would take the client 40 s to finish; it is answered long before.
        while not answer.done() and sent < len(head):
            writer.write(head[sent : sent + 1])
            sent += 1
            with contextlib.suppress(OSError):
                await writer.drain()
            await asyncio.wait({answer}, timeout=0.1)
        assert await answer == 408
        assert sent < len(head)
        assert await closed_by_server(reader)
    assert await healthy(server)


async def test_an_idle_connection_that_sends_nothing_is_closed_after_the_head_timeout(
    server_factory: StartServer,
) -> None:
    server = await server_factory(header_timeout_s=0.5)
    async with raw_connection(server) as (reader, _):
        assert await status_of(reader) == 408
        assert await closed_by_server(reader)


async def test_a_client_that_stalls_in_its_body_is_cut_off_with_408(
    server_factory: StartServer,
) -> None:
    server = await server_factory(body_timeout_s=1.0)
    head = (
        b"POST /api/processing-tasks HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    )
    async with raw_connection(server) as (reader, writer):
        writer.write(head + b'{"app_id": "Slow",')
        await writer.drain()
        assert await status_of(reader) == 408
        assert await closed_by_server(reader)
    assert await healthy(server)


@pytest.mark.parametrize("length", [20 * 1024, 70 * 1024])
async def test_a_long_request_target_is_answered_414_at_once(
    server_factory: StartServer, length: int
) -> None:
    server = await server_factory()
    async with raw_connection(server) as (reader, writer):
        writer.write(b"GET /api/processing-tasks/" + b"a" * length)  # no end of line yet
        await writer.drain()
        assert await status_of(reader) == 414
        assert await closed_by_server(reader)
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(server.app_ws("A" * length))
    assert refused.value.response.status_code == 414
    assert await healthy(server)


async def test_a_head_over_the_limit_is_answered_431(server_factory: StartServer) -> None:
    server = await server_factory(max_header_bytes=4096)
    async with raw_connection(server) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 8192)
        await writer.drain()
        assert await status_of(reader) == 431
    assert await healthy(server)


async def test_connections_beyond_the_process_cap_get_503_until_one_closes(
    server_factory: StartServer,
) -> None:
    server = await server_factory(max_connections=2)
    async with httpx.AsyncClient(base_url=server.base_url) as first:
        assert (await first.get("/healthz")).status_code == 200
        async with WsClient(server.app_ws("Held")) as held:
            await held.wait_type("connection_established")
            async with raw_connection(server) as (reader, writer):
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                await writer.drain()
                assert await status_of(reader) == 503
                assert await closed_by_server(reader)
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(server.app_ws("Late"))
            assert refused.value.response.status_code == 503
            await held.roundtrip_ping()
    # Both closed: a new client is served (the server notices the closes on its own time).
    async with asyncio.timeout(HANG_GUARD_S):
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if await healthy(server):
                    break
            await asyncio.sleep(0.05)
