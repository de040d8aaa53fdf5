"""A TCP forwarder that turns connections away until it is opened: a broker that is down, then
up, without touching the shared RabbitMQ."""

import asyncio
import contextlib

from tests.e2e.clients import free_port


class LateTcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.port = free_port()
        self.turned_away = 0
        self._target = (target_host, target_port)
        self._accepting = False
        self._attempt = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> "LateTcpProxy":
        self._server = await asyncio.start_server(self._on_connection, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
        for pipe in self._pipes:
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def turned_away_at_least(self, attempts: int) -> None:
        while self.turned_away < attempts:
            self._attempt.clear()
            await self._attempt.wait()

    def open(self) -> None:
        self._accepting = True

    def cut(self) -> None:
        """Drop every forwarded connection and turn new ones away until open() again."""
        self._accepting = False
        for pipe in self._pipes:
            pipe.cancel()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if not self._accepting:
            self.turned_away += 1
            self._attempt.set()
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            pipe = asyncio.create_task(_pipe(source, sink))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(ConnectionError, RuntimeError):
            sink.close()
