"""connect_robust's connection, with its socket writes coalesced by CoalescingWriter."""

import asyncio
from collections.abc import Callable
from typing import Any, cast

import aio_pika
import aiormq
from yarl import URL

from shared.broker.coalescing_writer import CoalescingWriter


class CoalescingTransportFactory(aiormq.connection.TransportFactory):
    def __init__(self, window_s: float, busy: Callable[[], bool]) -> None:
        self._window_s = window_s
        self._busy = busy

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # What aiormq picks when given no factory, with the writer wrapped.
        inner: aiormq.connection.TransportFactory = (
            aiormq.connection.TLSTransportFactory()
            if url.scheme == "amqps"
            else aiormq.connection.TCPTransportFactory()
        )
        reader, writer = await inner.create(url, **kwargs)
        coalescing = CoalescingWriter(writer, self._window_s, self._busy)
        return reader, cast(asyncio.StreamWriter, coalescing)


class RobustConnection(aio_pika.RobustConnection):
    """connect_robust's connection, with its socket writes coalesced."""

    def __init__(
        self, url: URL, *, write_window_s: float, busy: Callable[[], bool], **kwargs: Any
    ) -> None:
        super().__init__(url, **kwargs)
        if write_window_s > 0:
            # aio-pika hands self.kwargs to aiormq.connect on every (re)connect. A transport
            # factory is not one of its URL parameters, so connect_robust cannot pass it.
            self.kwargs["transport_factory"] = CoalescingTransportFactory(write_window_s, busy)
