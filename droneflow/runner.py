"""Runs the services: all three in one process (`serve`) or one per process. This is the only
module that imports every service."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Generator
from typing import Final

import uvicorn
from prometheus_client import start_http_server

from dispatcher.service import Dispatcher
from droneflow.security import redact_tokens_in_logs, token_keys
from gateway.app import create_app
from gateway.handshake import WebSocketProtocol
from gateway.http_protocol import ConnectionLimits, limited_http_protocol
from result_writer.service import ResultWriter
from shared.broker import Broker
from shared.errors import TRANSIENT_ERRORS
from shared.health import observed_adapters
from shared.service_http import service_http
from shared.settings import Settings
from shared.store import TaskStore
from shared.tokens import TokenKeys
from shared.wiring import build_broker, build_store

log = logging.getLogger(__name__)

RESTART_PAUSE_S: Final = 1.0


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the runner owns SIGTERM/SIGINT and sets `stop`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _uvicorn_server(
    settings: Settings, broker: Broker, store: TaskStore, keys: TokenKeys | None
) -> _Server:
    config = uvicorn.Config(
        create_app(settings, broker, store, keys),
        host=settings.host,
        port=settings.port,
        http=limited_http_protocol(ConnectionLimits.of(settings)),
        ws=WebSocketProtocol,
        ws_max_size=settings.max_frame_bytes,
        ws_per_message_deflate=settings.ws_compression,
        log_level=settings.log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
    )
    redact_tokens_in_logs()  # after Config, which sets uvicorn's logging up
    return _Server(config)


async def _serve_http(server: _Server, stop: asyncio.Event) -> None:
    serving = asyncio.create_task(server.serve())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopping.cancel()
    await serving
    if not server.started:
        raise SystemExit(f"could not serve on {server.config.host}:{server.config.port}")


def _dispatcher(settings: Settings, broker: Broker, store: TaskStore) -> Dispatcher:
    broker, store, _, _ = observed_adapters("dispatcher", broker, store)
    return Dispatcher(settings, broker, store)


def _result_writer(settings: Settings, broker: Broker, store: TaskStore) -> ResultWriter:
    broker, store, _, _ = observed_adapters("result writer", broker, store)
    return ResultWriter(settings, broker, store)


async def run_embedded(settings: Settings, stop: asyncio.Event) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    keys = token_keys(settings, "serve")
    _serve_metrics(settings)
    async with build_broker(settings) as broker, build_store(settings) as store:
        services_stop = asyncio.Event()
        services = [
            asyncio.create_task(_dispatcher(settings, broker, store).run(services_stop)),
            asyncio.create_task(_result_writer(settings, broker, store).run(services_stop)),
        ]
        try:
            await _serve_http(_uvicorn_server(settings, broker, store, keys), stop)
        finally:
            # The gateway stops first: its drone sockets hand their tasks back while the
            # dispatcher and the result writer still run.
            services_stop.set()
            await asyncio.gather(*services)


async def _supervised(
    name: str,
    settings: Settings,
    stop: asyncio.Event,
    serve: Callable[[Broker, TaskStore], Awaitable[None]],
) -> None:
    """Run one service of the distributed deployment on fresh adapters, and start it over while
    its broker or store is unreachable, until `stop`. A service (re)started during a RabbitMQ
    restart would otherwise exit, because a robust connection recovers only once it has been
    made and a consumer set up on it."""
    while True:
        try:
            async with build_broker(settings) as broker, build_store(settings) as store:
                await serve(broker, store)
            return
        except TRANSIENT_ERRORS as exc:
            log.warning(
                "%s could not start: %s; trying again in %.0f s", name, exc, RESTART_PAUSE_S
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RESTART_PAUSE_S)
        if stop.is_set():
            return


async def run_gateway(settings: Settings, stop: asyncio.Event) -> None:
    keys = token_keys(settings, "gateway")
    _serve_metrics(settings)

    async def serve(broker: Broker, store: TaskStore) -> None:
        await _serve_http(_uvicorn_server(settings, broker, store, keys), stop)

    await _supervised("gateway", settings, stop, serve)


def _serve_metrics(settings: Settings) -> None:
    # A gateway serves /metrics itself, to admin tokens only when tokens are on: this port is one
    # without tokens, for Prometheus. The dispatcher and result writer use shared.service_http.
    if settings.metrics_port is not None:
        start_http_server(settings.metrics_port, addr=settings.host)


async def run_dispatcher(settings: Settings, stop: asyncio.Event) -> None:
    async with service_http("dispatcher", settings) as health:
        await _supervised(
            "dispatcher",
            settings,
            stop,
            lambda broker, store: health.serving(
                broker, store, _dispatcher(settings, broker, store).run(stop)
            ),
        )


async def run_result_writer(settings: Settings, stop: asyncio.Event) -> None:
    async with service_http("result writer", settings) as health:
        await _supervised(
            "result writer",
            settings,
            stop,
            lambda broker, store: health.serving(
                broker, store, _result_writer(settings, broker, store).run(stop)
            ),
        )
