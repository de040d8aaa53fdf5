"""Runs the services: all three in one process (`serve`) or one per process. This is the only
module that imports every service."""

import asyncio
import contextlib
import errno
import gc
import logging
import random
import socket
from collections.abc import Awaitable, Callable, Generator, Iterator
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
from shared.errors import (
    TRANSIENT_ERRORS,
    BrokerUnavailable,
    CannotListen,
    ConfigurationError,
    DroneflowError,
)
from shared.health import observed_adapters
from shared.logs import url_without_password
from shared.service_http import service_http
from shared.settings import Settings
from shared.store import TaskStore
from shared.tokens import TokenKeys
from shared.wiring import build_broker, build_store

log = logging.getLogger(__name__)

# A service that cannot reach its broker or store tries again after a random pause of up to
# FIRST_RETRY_S, doubling with every failed attempt up to MAX_RETRY_S ("full jitter": services
# restarted together do not come back in step; see the AWS Architecture Blog, "Exponential
# Backoff And Jitter").
FIRST_RETRY_S: Final = 0.5
MAX_RETRY_S: Final = 30.0
# Their connection failures are our retry lines; aio-pika's own ("Reconnecting after 2 seconds")
# would contradict them while a start is being retried.
DRIVER_LOGGERS: Final = ("aio_pika", "aiormq")
GC_YOUNG_THRESHOLD: Final = 20_000
"""Allocations between two collections of the youngest generation (CPython's default: 700)."""


class SignalFreeServer(uvicorn.Server):
    """uvicorn without its own signal handlers, for a caller that owns SIGTERM and SIGINT: the
    runner sets `stop`; bench/relay.py closes its store before the process ends."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def listen(settings: Settings) -> socket.socket:
    """The listening socket of a gateway, bound before anything reports that it serves.
    Raises CannotListen, with the setting to change.

    uvicorn would bind only after its lifespan startup, having logged "Application startup
    complete", and then exit with a traceback when the port is taken. Like uvicorn's own
    `Config.bind_socket` (its multi-worker mode), a host with a colon is IPv6; any other,
    names included, is resolved as IPv4."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    try:
        return socket.create_server((settings.host, settings.port), family=family)
    except OSError as exc:
        raise CannotListen(_listen_advice(settings, exc)) from None


def _listen_advice(settings: Settings, exc: OSError) -> str:
    host, port = settings.host, settings.port
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is already in use by another process; set DRONEFLOW_PORT "
            "(or --port) to a free port, or stop that process"
        )
    if exc.errno == errno.EACCES:
        return (
            f"not allowed to listen on port {port}: ports below 1024 need privileges; set "
            "DRONEFLOW_PORT (or --port) to 1024 or above"
        )
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return (
            f"cannot listen on {host}: not an address of this machine; set DRONEFLOW_HOST "
            "(or --host) to one of its addresses, such as 127.0.0.1 or 0.0.0.0"
        )
    return (
        f"cannot listen on {host}:{port}: {exc.strerror or exc}; check DRONEFLOW_HOST and "
        "DRONEFLOW_PORT (or --host and --port)"
    )


def _uvicorn_server(
    settings: Settings, broker: Broker, store: TaskStore, keys: TokenKeys | None
) -> SignalFreeServer:
    config = uvicorn.Config(
        create_app(settings, broker, store, keys),
        host=settings.host,
        port=settings.port,
        http=limited_http_protocol(ConnectionLimits.of(settings)),
        ws=WebSocketProtocol,
        ws_max_size=settings.max_frame_bytes,
        ws_per_message_deflate=settings.ws_compression,
        # No log_config: uvicorn's loggers keep no handler of their own and propagate to the
        # root handler droneflow.startup set up, so they share its format (DRONEFLOW_LOG_FORMAT).
        log_config=None,
        log_level=settings.log_level,
        access_log=settings.access_log,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
    )
    redact_tokens_in_logs()  # after Config, which sets uvicorn's logging up
    return SignalFreeServer(config)


async def _serve_http(
    server: SignalFreeServer, listening: socket.socket, stop: asyncio.Event
) -> None:
    host, port = listening.getsockname()[:2]
    # uvicorn says where it serves only for a port it binds itself.
    log.info("listening on http://%s:%d", f"[{host}]" if ":" in host else host, port)
    serving = asyncio.create_task(server.serve(sockets=[listening]))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopping.cancel()
    await serving
    if not server.started:
        raise SystemExit(f"could not serve on {host}:{port}")


def _freeze_startup_heap() -> None:
    """Leave what start-up built (modules, pydantic schemas, routes: ~90,000 objects) out of
    every later garbage collection, and collect the young generation less often.

    A full collection walked all of it: 60 ms of CPU each on this box, with the event loop
    and every task in flight stopped, three or four times per 16,500 tasks in embedded mode,
    stops the size of the ~50 ms p99 at half of peak (bench/EMBEDDED.md). With a young
    threshold of 700 a task's own objects (its futures, frames and records, alive for its
    round trip) were collected several times before they died and were promoted into the
    older generations, which then filled and were walked again. Frozen objects are those
    alive now, nearly all of which live as long as the process; a cycle among them that dies
    later is never collected.

    Every service does it once its adapters are up (a gateway's app is built after, and stays
    young: a few thousand objects). Once per process: a process that starts several servers
    (the e2e tests) freezes what it held at the first, and the cycles it leaves afterwards stay
    collectable."""
    if gc.get_freeze_count():
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def _dispatcher(settings: Settings, broker: Broker, store: TaskStore) -> Dispatcher:
    broker, store, _, _ = observed_adapters("dispatcher", broker, store)
    return Dispatcher(settings, broker, store)


def _result_writer(settings: Settings, broker: Broker, store: TaskStore) -> ResultWriter:
    broker, store, _, _ = observed_adapters("result writer", broker, store)
    return ResultWriter(settings, broker, store)


async def run_embedded(settings: Settings, stop: asyncio.Event) -> None:
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the data directory {settings.data_dir}: {exc.strerror or exc}; set "
            "DRONEFLOW_DATA_DIR to a directory droneflow may write to"
        ) from None
    keys = token_keys(settings, "serve")
    with listen(settings) as listening:
        _serve_metrics(settings)
        async with build_broker(settings) as broker, build_store(settings) as store:
            services_stop = asyncio.Event()
            dispatcher = _dispatcher(settings, broker, store)
            if not await dispatcher.recover_until_done(stop):
                return
            services = [
                asyncio.create_task(dispatcher.run(services_stop)),
                asyncio.create_task(_result_writer(settings, broker, store).run(services_stop)),
            ]
            try:
                server = _uvicorn_server(settings, broker, store, keys)
                _freeze_startup_heap()
                await _serve_http(server, listening, stop)
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
    its broker or store is unreachable, until `stop`, backing off (see FIRST_RETRY_S). A
    service (re)started during a RabbitMQ restart would otherwise exit, because a robust
    connection recovers only once it has been made and a consumer set up on it."""
    failed_attempts = 0
    while True:
        started = False
        try:
            async with contextlib.AsyncExitStack() as adapters:
                with _quiet_driver_logs():
                    broker = await adapters.enter_async_context(build_broker(settings))
                    store = await adapters.enter_async_context(build_store(settings))
                started, failed_attempts = True, 0
                _freeze_startup_heap()
                await serve(broker, store)
            return
        except TRANSIENT_ERRORS as exc:
            failed_attempts += 1
            delay_s, ceiling_s = retry_delay_s(failed_attempts)
            log.warning(
                "%s %s: %s; attempt %d failed, next in %.2f s (backoff up to %.1f s)",
                name,
                "lost its connection" if started else "could not start",
                unreachable(settings, exc),
                failed_attempts,
                delay_s,
                ceiling_s,
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay_s)
        if stop.is_set():
            return


def retry_delay_s(failed_attempts: int) -> tuple[float, float]:
    """How long to wait after the n-th failed attempt in a row, and the most it could be."""
    ceiling_s = min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** (failed_attempts - 1))
    return random.uniform(0, ceiling_s), ceiling_s


def unreachable(settings: Settings, exc: DroneflowError) -> str:
    """Which dependency failed, at which URL (without its password) set by which setting, and
    why, on one line."""
    what, url, setting = dependency(settings, exc)
    reason = " ".join(str(exc).split())
    if len(reason) > MAX_REASON_CHARS:  # pymongo appends its whole topology description
        reason = reason[: MAX_REASON_CHARS - 1] + "…"
    return f"{what} at {url_without_password(url)} ({setting}) unavailable: {reason}"


def dependency(settings: Settings, exc: DroneflowError) -> tuple[str, str, str]:
    """(what, its URL, the setting of the URL) of the dependency `exc` is about."""
    if isinstance(exc, BrokerUnavailable):
        return "broker", settings.broker_url, "DRONEFLOW_BROKER_URL"
    return "store", settings.store_url, "DRONEFLOW_STORE_URL"


MAX_REASON_CHARS: Final = 200


@contextlib.contextmanager
def _quiet_driver_logs() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in DRIVER_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


async def run_gateway(settings: Settings, stop: asyncio.Event) -> None:
    keys = token_keys(settings, "gateway")
    # A port in use fails the start at once, not after the broker and store are reached. The
    # probe is closed again: a socket bound while the broker is away would take connections
    # (into its backlog) that nothing answers, where a refused one tells the client at once.
    listen(settings).close()
    _serve_metrics(settings)

    async def serve(broker: Broker, store: TaskStore) -> None:
        server = _uvicorn_server(settings, broker, store, keys)
        with listen(settings) as listening:
            await _serve_http(server, listening, stop)

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
