"""Nothing is kept for ids that went away: after its drones and apps leave, a gateway on the
in-memory broker holds no queue, session, hub, socket count or metric label for them."""

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client import generate_latest

from dispatcher.service import Dispatcher
from gateway.app import create_app
from gateway.connections import Registry
from gateway.handshake import WebSocketProtocol
from gateway.socket_limits import SocketLimits
from result_writer.service import ResultWriter
from shared.broker.memory import InMemoryBroker
from shared.settings import Settings
from shared.store.sqlite import SQLiteTaskStore
from tests.e2e.clients import WsClient, free_port, result_message, task_body

DRONES = 20
HANG_GUARD_S = 10.0


class Gateway:
    def __init__(self, app: FastAPI, broker: InMemoryBroker, url: str) -> None:
        self.app, self.broker, self.url = app, broker, url

    @property
    def registry(self) -> Registry:
        registry: Registry = self.app.state.gateway.registry
        return registry

    def socket_limits(self) -> SocketLimits:
        layer: object = self.app.middleware_stack
        while not isinstance(layer, SocketLimits):
            layer = layer.app  # type: ignore[attr-defined]
        return layer


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    """The gateway's app in this event loop, with the dispatcher and result writer beside it
    as `droneflow serve` runs them, so the broker and registry can be inspected."""
    settings = Settings(data_dir=tmp_path, port=free_port(), log_level="warning")
    async with (
        InMemoryBroker(settings.queues) as broker,
        SQLiteTaskStore(tmp_path / "db.sqlite") as store,
    ):
        app = create_app(settings, broker, store)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=settings.port, ws=WebSocketProtocol, log_level="warning"
        )
        server = uvicorn.Server(config)
        stop = asyncio.Event()
        services = [
            asyncio.create_task(Dispatcher(settings, broker, store).run(stop)),
            asyncio.create_task(ResultWriter(settings, broker, store).run(stop)),
        ]
        serving = asyncio.create_task(server.serve())
        await _eventually(lambda: server.started)
        yield Gateway(app, broker, f"ws://127.0.0.1:{settings.port}")
        server.should_exit = True
        stop.set()
        await asyncio.gather(serving, *services)


async def _eventually(check: Callable[[], bool]) -> None:
    """The server notices a closed socket a moment after the client: wait for it to."""
    async with asyncio.timeout(HANG_GUARD_S):
        for _ in iter(int, 1):
            if check():
                return
            await asyncio.sleep(0.01)


async def test_hygiene_nothing_is_kept_for_drones_and_apps_that_left(gateway: Gateway) -> None:
    # Given drones and an app of ids never seen before, and a task delivered and answered
    drone_ids = [f"leaving-drone-{i}" for i in range(DRONES)]
    drones = [WsClient(f"{gateway.url}/ws/drone/{drone_id}") for drone_id in drone_ids]
    app = WsClient(f"{gateway.url}/ws/application/leaving-app")
    for client in (*drones, app):
        await client.connect()
        await client.wait_type("connection_established")
    await app.send({"type": "processing_task", "data": task_body("leaving-app", drone_ids[0])})
    task = await drones[0].wait_type("processing_task")
    await drones[0].send(result_message(task["task_id"], drone_ids[0]))
    await app.wait_type("processing_result_received")
    queues = gateway.app.state.gateway.settings.queues
    assert queues.drone(drone_ids[0]).name in gateway.broker.queue_names()
    # When every one of them leaves
    for client in (*drones, app):
        await client.close()
    # Then the gateway keeps nothing keyed by their ids
    registry = gateway.registry
    await _eventually(lambda: not registry.drones and not registry.apps)
    await _eventually(lambda: not gateway.socket_limits().live)
    departed = {queues.drone(drone_id).name for drone_id in drone_ids} | {
        queues.app("leaving-app").name
    }
    await _eventually(lambda: not departed & gateway.broker.queue_names())
    metrics = generate_latest().decode()
    assert "leaving-" not in metrics
