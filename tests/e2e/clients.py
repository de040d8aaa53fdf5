"""Thin test clients that speak the public protocol over real sockets."""

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any, Self

import websockets
from websockets.asyncio.client import ClientConnection

RECV_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class WsClient:
    """A WebSocket peer that remembers every frame it received, so tests can wait for one."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connection: ClientConnection | None = None
        self.received: list[dict[str, Any]] = []
        self._arrived = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None
        self.close_code: int | None = None
        self.pings_sent = 0

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        self.connection = await websockets.connect(self.url, max_size=None)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.connection is not None
        try:
            async for raw in self.connection:
                frame = json.loads(raw)
                async with self._arrived:
                    self.received.append(frame)
                    self._arrived.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self.connection.close_code
            async with self._arrived:
                self._arrived.notify_all()

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        assert self.connection is not None
        data = message if isinstance(message, str | bytes) else json.dumps(message)
        if isinstance(message, dict) and message.get("type") == "ping":
            self.pings_sent += 1
        await self.connection.send(data)

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = RECV_TIMEOUT_S
    ) -> dict[str, Any]:
        """The first frame received so far (or later) matching `predicate`."""

        def found() -> dict[str, Any] | None:
            return next((f for f in self.received if predicate(f)), None)

        async with asyncio.timeout(timeout_s), self._arrived:
            while (frame := found()) is None:
                if self._reader is not None and self._reader.done():
                    raise AssertionError(f"connection closed ({self.close_code}) while waiting")
                await self._arrived.wait()
            return frame

    async def wait_type(self, message_type: str, **fields: Any) -> dict[str, Any]:
        return await self.wait_for(
            lambda f: (
                f.get("type") == message_type and all(f.get(k) == v for k, v in fields.items())
            )
        )

    def of_type(self, message_type: str) -> list[dict[str, Any]]:
        return [f for f in self.received if f.get("type") == message_type]

    async def wait_closed(self, timeout_s: float = RECV_TIMEOUT_S) -> int | None:
        assert self._reader is not None
        await asyncio.wait_for(asyncio.shield(self._reader), timeout_s)
        return self.close_code

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()
        if self._reader is not None:
            await self._reader

    async def roundtrip_ping(self) -> None:
        """A ping answered proves every frame sent before it was handled. Pongs are counted
        against every ping sent, so a ping the caller sent itself is not taken for this one's."""
        await self.send({"type": "ping"})
        pings = self.pings_sent
        await self.wait_for(lambda _: len(self.of_type("pong")) >= pings)


def result_message(task_id: str, drone_id: str, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "task_id": task_id,
        "drone_id": drone_id,
        "result_data": {"detections": [{"class": "person", "confidence": 0.92}]},
        "processing_time": 0.85,
        "success": True,
        "timestamp": "2024-01-01T12:00:00Z",
    }
    data.update(overrides)
    return {"type": "processing_result", "data": data}


def task_body(app_id: str, drone_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "app_id": app_id,
        "drone_id": drone_id,
        "task_type": "image_analysis",
        "input_data": {"image_url": "https://example.com/image.jpg"},
        "priority": 3,
    }
    body.update(overrides)
    return body
