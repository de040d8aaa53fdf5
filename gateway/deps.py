"""Everything a route needs, as Annotated dependencies read from app.state."""

from typing import Annotated

from fastapi import Depends, Request, WebSocket

from gateway.connections import Registry
from gateway.drones import DroneService
from gateway.presence import PresenceBoard
from gateway.readiness import GatewayHealth
from gateway.tasks import TaskService
from shared.broker import Broker
from shared.health import Dependency, refusing_store
from shared.settings import Settings
from shared.store import TaskStore


def _state(connection: Request | WebSocket) -> "GatewayState":
    state: GatewayState = connection.app.state.gateway
    return state


class GatewayState:
    def __init__(
        self,
        settings: Settings,
        broker: Broker,
        store: TaskStore,
        registry: Registry,
        health: GatewayHealth | None = None,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.store = store
        self.registry = registry
        self.health = health or GatewayHealth(
            Dependency("rabbitmq", "gateway"), Dependency("store", "gateway"), store
        )
        # REST calls and task submissions refuse at once during a store outage; deliveries to
        # drones and their reports keep the plain store (see refusing_store).
        self.request_store = refusing_store(
            self.health.raw_store, self.health.store, settings.store_timeout_s
        )
        self.tasks = TaskService(settings, broker, self.request_store, self.health.broker)
        self.drones = DroneService(settings, broker, store)
        self.presence = PresenceBoard(settings, registry, store)


def get_store(request: Request) -> TaskStore:
    return _state(request).request_store


def get_tasks(request: Request) -> TaskService:
    return _state(request).tasks


def get_state(request: Request) -> GatewayState:
    return _state(request)


async def require_admin(request: Request) -> None:
    """The one gate of the fleet routes (/api/drones, /api/applications, /api/queues): they
    are for admins when tokens are on. This gateway checks no tokens yet, so every caller is
    admitted; token auth puts its admin check here and the routes follow."""


def get_ws_state(websocket: WebSocket) -> GatewayState:
    return _state(websocket)


StoreDep = Annotated[TaskStore, Depends(get_store)]
TasksDep = Annotated[TaskService, Depends(get_tasks)]
StateDep = Annotated[GatewayState, Depends(get_state)]
AdminDep = Depends(require_admin)
WsStateDep = Annotated[GatewayState, Depends(get_ws_state)]
