"""create_app(settings, broker, store, keys): the gateway as an ASGI app. Adapters come from the
caller, already entered, so the same app serves embedded and distributed deployments. `keys`
verify tokens; without them (None) tokens are off and every client is trusted."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway import asyncapi, readiness
from gateway.auth import Forbidden, may_read_metrics
from gateway.connections import Registry
from gateway.dashboard import router as dashboard_router
from gateway.deps import GatewayState, IdentityDep
from gateway.limits import BodySizeLimit
from gateway.origins import OriginCheck, parse_origins
from gateway.readiness import GatewayHealth, unavailable_response
from gateway.rejections import RejectionCount
from gateway.routes import fleet, rest
from gateway.routes.responses import ADMIN_ONLY, Health, answers
from gateway.routes.ws import SocketRoutes
from gateway.socket_limits import install_limits
from shared.broker import Broker, Subscription
from shared.errors import TRANSIENT_ERRORS, DroneflowError
from shared.health import observed_adapters
from shared.metrics import refresh_queue_depths
from shared.protocol import ControlMessage
from shared.settings import Settings
from shared.store import TaskStore
from shared.tokens import TokenKeys

log = logging.getLogger(__name__)

CONTROL_SUBSCRIBE_WAIT_S: Final = 2.0


async def _subscribe_control(
    broker: Broker, settings: Settings, registry: Registry
) -> Subscription:
    async def on_control(body: bytes) -> None:
        message = ControlMessage.decode(body)
        await registry.on_control(message.kind, message.task_id, message.drone_id)

    # A gateway started while RabbitMQ restarts serves without the control topic until it can
    # subscribe; meanwhile reconcile_held frees drones' slots from the store.
    while True:
        try:
            return await broker.subscribe(settings.queues.control, on_control)
        except TRANSIENT_ERRORS as exc:
            log.warning("control topic unavailable: %s; trying again", exc)
        await asyncio.sleep(settings.sweep_interval_s)


async def _reconcile_forever(registry: Registry, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await registry.reconcile_held()
        except TRANSIENT_ERRORS as exc:
            log.warning("held-task check skipped: %s", exc)


async def _stop_control(control: "asyncio.Task[Subscription]") -> None:
    if control.done() and not control.cancelled() and control.exception() is None:
        await control.result().cancel()
    else:
        control.cancel()
        await asyncio.gather(control, return_exceptions=True)


def create_app(
    settings: Settings, broker: Broker, store: TaskStore, keys: TokenKeys | None = None
) -> FastAPI:
    raw_store = store
    broker, store, broker_health, store_health = observed_adapters("gateway", broker, store)
    health = GatewayHealth(broker_health, store_health, raw_store)
    registry = Registry(broker, store, settings.queues, prefetch=64)
    state = GatewayState(settings, broker, store, registry, health, keys)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        control = asyncio.create_task(_subscribe_control(broker, settings, registry))
        # Subscribed before the first request as a rule; in the background only while it fails.
        await asyncio.wait({control}, timeout=CONTROL_SUBSCRIBE_WAIT_S)
        reconciler = asyncio.create_task(_reconcile_forever(registry, settings.sweep_interval_s))
        background = [reconciler, asyncio.create_task(state.presence.run())]
        if state.auth.enabled:
            background.append(asyncio.create_task(state.auth.watch_revocations()))
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await state.presence.withdraw()
            await _stop_control(control)
            await registry.notified.flush()

    # Swagger UI and ReDoc from assets shipped in a package: /docs works with no network.
    app = FastAPIOffline(title="droneflow", version="0.1.0", lifespan=lifespan)
    app.state.gateway = state
    app.include_router(rest.router)
    app.include_router(fleet.router)
    app.include_router(dashboard_router)
    app.include_router(asyncapi.router)
    app.include_router(readiness.router)
    # Innermost: the sockets pass every check of the middleware added after it.
    app.add_middleware(SocketRoutes)
    app.add_middleware(BodySizeLimit, max_body_bytes=settings.max_body_bytes)
    install_limits(app, settings)
    allowed_origins = parse_origins(settings.allowed_origins)
    app.add_middleware(OriginCheck, allowed=allowed_origins)
    if allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=sorted(allowed_origins),
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(RejectionCount)

    @app.get("/healthz", response_model=None, responses=answers(Health))
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse, responses=ADMIN_ONLY)
    async def metrics(identity: IdentityDep) -> PlainTextResponse:
        may_read_metrics(identity)
        await refresh_queue_depths(broker, settings.queues)
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(DroneflowError)
    async def unavailable(request: Request, exc: DroneflowError) -> JSONResponse:
        if isinstance(exc, TRANSIENT_ERRORS):
            return unavailable_response(settings, health, exc)
        log.exception("unexpected droneflow error", exc_info=exc)
        return JSONResponse({"detail": str(exc)}, status_code=400)

    return app
