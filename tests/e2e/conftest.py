"""An embedded droneflow on uvicorn on a free port, in the test's own event loop, and
subprocess servers for tests that kill the process."""

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from droneflow.runner import run_embedded
from shared.settings import Settings
from tests.e2e.clients import free_port
from tests.processes import ServiceProcess

READY_TIMEOUT_S = 20.0


@dataclass
class Server:
    base_url: str
    ws_url: str
    settings: Settings

    def app_ws(self, app_id: str) -> str:
        return f"{self.ws_url}/ws/application/{app_id}"

    def drone_ws(self, drone_id: str, capacity: int | None = None) -> str:
        suffix = f"?capacity={capacity}" if capacity is not None else ""
        return f"{self.ws_url}/ws/drone/{drone_id}{suffix}"


async def wait_ready(base_url: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client, asyncio.timeout(timeout_s):
        while True:
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)


def embedded_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "port": free_port(),
        "broker_url": "memory://",
        "sweep_interval_s": 0.2,
        "log_level": "warning",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def server_factory(tmp_path: Path) -> AsyncIterator[object]:
    """Start embedded servers in this loop; each is stopped at teardown."""
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(**overrides: object) -> Server:
        settings = embedded_settings(tmp_path, **overrides)
        stop = asyncio.Event()
        task = asyncio.create_task(run_embedded(settings, stop))
        running.append((stop, task))
        base = f"http://127.0.0.1:{settings.port}"
        await wait_ready(base)
        return Server(base, f"ws://127.0.0.1:{settings.port}", settings)

    yield start
    for stop, _ in running:
        stop.set()
    for _, task in running:
        await asyncio.wait_for(task, 20)


@pytest.fixture
async def server(server_factory: object) -> Server:
    return await server_factory()  # type: ignore[operator, no-any-return]


@pytest.fixture
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        yield client


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[ServiceProcess]:
    """`droneflow serve` as a real subprocess, for kill -9."""
    data_dir = tmp_path / "serve-data"
    env = {
        "DRONEFLOW_DATA_DIR": str(data_dir),
        "DRONEFLOW_STORE_URL": f"sqlite:///{data_dir / 'droneflow.db'}",
        "DRONEFLOW_BROKER_URL": "memory://",
        "DRONEFLOW_LOG_LEVEL": "warning",
    }
    proc = ServiceProcess("serve", env, tmp_path)
    yield proc
    proc.ensure_dead()
