"""The SDK's token= travels as a bearer token on the WebSocket handshake and on REST calls.

The server side of tokens is not in this tree yet, so a recording websockets server stands in
for it; the SDK's end-to-end tests run with auth off."""

import asyncio
import json

from websockets.asyncio.server import Request, Response, ServerConnection, serve

from droneflow.client import AppClient, DroneWorker
from tests.e2e.clients import free_port


async def test_sdk_sends_its_token_on_sockets_and_rest() -> None:
    seen: list[tuple[str, str | None]] = []
    both_sockets = asyncio.Event()

    def record(connection: ServerConnection, request: Request) -> Response | None:
        seen.append((request.path, request.headers.get("Authorization")))
        if request.path.startswith("/api/"):
            return connection.respond(200, json.dumps({"task_id": "t1", "status": "pending"}))
        return None

    async def welcome(socket: ServerConnection) -> None:
        await socket.send(json.dumps({"type": "connection_established"}))
        if sum(path.startswith("/ws/") for path, _ in seen) == 2:
            both_sockets.set()
        await socket.wait_closed()

    port = free_port()
    async with serve(welcome, "127.0.0.1", port, process_request=record):
        url = f"http://127.0.0.1:{port}"
        worker = DroneWorker(url, drone_id="D1", token="drone-token")
        running = asyncio.create_task(worker.run(handle_signals=False))
        async with AppClient(url, app_id="A1", token="app-token") as app:
            task = await app.get_task("t1")
            await asyncio.wait_for(both_sockets.wait(), 10)
        worker.stop()
        await asyncio.wait_for(running, 10)

    assert task["task_id"] == "t1"
    assert sorted(seen) == [
        ("/api/processing-tasks/t1", "Bearer app-token"),
        ("/ws/application/A1", "Bearer app-token"),
        ("/ws/drone/D1?capacity=4", "Bearer drone-token"),
    ]
