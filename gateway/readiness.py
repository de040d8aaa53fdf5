"""What the gateway tells operators and clients about its dependencies: /readyz, and the 503
with Retry-After that a request gets while the store or the broker is unavailable."""

import asyncio
import logging
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gateway.routes.responses import Readiness, answers
from shared.errors import BrokerUnavailable, DroneflowError
from shared.health import Dependency
from shared.settings import Settings
from shared.store import TaskStore

log = logging.getLogger(__name__)

READYZ_PROBE_TASK_ID = "readyz-probe"


@dataclass(frozen=True)
class GatewayHealth:
    broker: Dependency
    store: Dependency
    raw_store: TaskStore
    """Unobserved: a read that works must not mark the store back while its writes fail."""

    def dependency_of(self, exc: DroneflowError) -> Dependency:
        return self.broker if isinstance(exc, BrokerUnavailable) else self.store


def unavailable_response(
    settings: Settings, health: GatewayHealth, exc: DroneflowError
) -> JSONResponse:
    dependency = health.dependency_of(exc)
    dependency.refused()
    if dependency.available:
        # The observer logs the outage once; an error it did not see (a full disk) is logged here.
        log.warning("503 for want of %s: %s", dependency.name, exc)
    return JSONResponse(
        {"detail": "temporarily unavailable, retry"},
        status_code=503,
        headers={"Retry-After": str(settings.retry_after_s)},
    )


router = APIRouter()


@router.get(
    "/readyz",
    responses={
        **answers(Readiness),
        503: {"model": Readiness, "description": "the store cannot be read"},
    },
)
async def readyz(request: Request) -> JSONResponse:
    """503 while the store cannot be read: this gateway can then take no task. RabbitMQ away is
    reported but leaves it ready, since tasks are still accepted (routed once it is back)."""
    settings: Settings = request.app.state.gateway.settings
    health: GatewayHealth = request.app.state.gateway.health
    try:
        async with asyncio.timeout(settings.store_timeout_s + 1.0):
            await health.raw_store.get_task(READYZ_PROBE_TASK_ID)
        store_ok = True
    except (DroneflowError, TimeoutError):
        store_ok = False
    body = {
        "status": "ready" if store_ok else "unavailable",
        "store": "ok" if store_ok else "unavailable",
        "rabbitmq": "ok" if health.broker.available else "unavailable",
    }
    return JSONResponse(body, status_code=200 if store_ok else 503)
