"""What the gateway tells operators and clients about its dependencies: /readyz, and the 503
with Retry-After that a request gets while the store or the broker is unavailable."""

import logging
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gateway.routes.responses import Readiness, answers
from shared.errors import BrokerUnavailable, DroneflowError
from shared.health import Dependency, check_readiness
from shared.settings import Settings
from shared.store import TaskStore

log = logging.getLogger(__name__)


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
        503: {
            "model": Readiness,
            "description": "RabbitMQ or the store does not answer: `reason` says which",
        },
    },
)
async def readyz(request: Request) -> JSONResponse:
    """503 while RabbitMQ or the store does not answer, naming which in `reason`. The gateway
    still takes tasks while only RabbitMQ is away (they are routed once it is back), so a load
    balancer should route on /healthz; /readyz is for alerts and for ordering start-ups."""
    state = request.app.state.gateway
    settings: Settings = state.settings
    health: GatewayHealth = state.health
    readiness = await check_readiness(
        state.broker,
        health.raw_store,
        settings.queues,
        max(settings.store_timeout_s, settings.publish_timeout_s) + 1.0,
    )
    return JSONResponse(readiness.body(), status_code=readiness.status_code)
