"""A stand-in for Starlette's WebSocket where a test drives a session or registry directly:
they only send text to it, and close it."""

from typing import Any

import orjson


class RecordingSocket:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.closed_with: int | None = None

    async def send_text(self, data: str) -> None:
        self.frames.append(orjson.loads(data))

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed_with = code
