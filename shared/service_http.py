"""The HTTP port of a service without one of its own (the dispatcher, the result writer):
`/healthz` (the process runs), `/readyz` (its broker and store answer; 503 naming which does
not) and `/metrics` (Prometheus), on DRONEFLOW_METRICS_PORT.

The server outlives the service's adapters: the runner starts the service over on fresh ones
while a dependency is unreachable, and the server reads whichever are current. Between two
runs there are none, and /readyz says so."""

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Generator
from typing import Final, TypeVar

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shared.broker import Broker
from shared.errors import CannotListen
from shared.health import check_readiness
from shared.metrics import refresh_queue_depths
from shared.settings import Settings
from shared.store import TaskStore

log = logging.getLogger(__name__)

NOT_STARTED: Final = "not connected yet: RabbitMQ or the store was unreachable at start"

T = TypeVar("T")


class ServiceHealth:
    """What the HTTP port reports on: the service's current adapters, if it has any."""

    def __init__(self, service: str, settings: Settings) -> None:
        self.service = service
        self.settings = settings
        self._adapters: tuple[Broker, TaskStore] | None = None

    async def serving(self, broker: Broker, store: TaskStore, run: Awaitable[T]) -> T:
        """Await `run`, the service on these adapters, reporting on them meanwhile."""
        self._adapters = (broker, store)
        try:
            return await run
        finally:
            self._adapters = None

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "service": self.service})

    async def readyz(self, request: Request) -> Response:
        if self._adapters is None:
            body = {
                "status": "unavailable",
                "rabbitmq": "unknown",
                "store": "unknown",
                "reason": NOT_STARTED,
                "service": self.service,
            }
            return JSONResponse(body, status_code=503)
        broker, store = self._adapters
        timeout_s = max(self.settings.store_timeout_s, self.settings.publish_timeout_s) + 1.0
        readiness = await check_readiness(broker, store, self.settings.queues, timeout_s)
        body = {**readiness.body(), "service": self.service}
        return JSONResponse(body, status_code=readiness.status_code)

    async def metrics(self, request: Request) -> Response:
        if self._adapters is not None:
            await refresh_queue_depths(self._adapters[0], self.settings.queues)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/healthz", self.healthz),
                Route("/readyz", self.readyz),
                Route("/metrics", self.metrics),
            ]
        )


class _QuietServer(uvicorn.Server):
    """Without uvicorn's signal handlers: the runner owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.asynccontextmanager
async def service_http(service: str, settings: Settings) -> AsyncIterator[ServiceHealth]:
    """Serve the service's HTTP port, if DRONEFLOW_METRICS_PORT is set, until the block ends.
    CannotListen when the port cannot be bound."""
    health = ServiceHealth(service, settings)
    if settings.metrics_port is None:
        yield health
        return
    config = uvicorn.Config(
        health.app(),
        host=settings.host,
        port=settings.metrics_port,
        log_config=None,  # the runner sets logging up
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    # Bound here, so that a port in use is an error at once rather than a log line of uvicorn.
    try:
        family = socket.getaddrinfo(settings.host, settings.metrics_port)[0][0]
        listener = socket.create_server((settings.host, settings.metrics_port), family=family)
    except OSError as exc:
        raise CannotListen(
            f"{service}: cannot serve on {settings.host}:{settings.metrics_port}: "
            f"{exc.strerror or exc}; set DRONEFLOW_METRICS_PORT to a free port"
        ) from None
    server = _QuietServer(config)
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        yield health
    finally:
        server.should_exit = True
        await serving
        listener.close()
