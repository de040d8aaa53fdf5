"""Everything a route needs, as Annotated dependencies read from app.state."""

from typing import Annotated

from fastapi import Depends, HTTPException, Request, WebSocket
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.auth import Authenticator, Forbidden
from gateway.connections import Registry
from gateway.drones import DroneService
from gateway.presence import PresenceBoard
from gateway.readiness import GatewayHealth
from gateway.tasks import TaskService
from shared.broker import Broker
from shared.health import Dependency, refusing_store
from shared.settings import Settings
from shared.store import TaskStore
from shared.tokens import Identity, InvalidToken, TokenKeys


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
        keys: TokenKeys | None = None,
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
        # Token checks read the store per REST call: during a store outage they refuse at once.
        self.auth = Authenticator(keys, self.request_store)
        self.tasks = TaskService(settings, broker, self.request_store, self.health.broker)
        self.drones = DroneService(settings, broker, store)
        self.presence = PresenceBoard(settings, registry, store)


def get_store(request: Request) -> TaskStore:
    return _state(request).request_store


def get_tasks(request: Request) -> TaskService:
    return _state(request).tasks


def get_state(request: Request) -> GatewayState:
    return _state(request)


StoreDep = Annotated[TaskStore, Depends(get_store)]
TasksDep = Annotated[TaskService, Depends(get_tasks)]
StateDep = Annotated[GatewayState, Depends(get_state)]


_bearer = HTTPBearer(
    auto_error=False,
    description="`droneflow token create …`; required unless the server runs with tokens off",
)


async def get_identity(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Identity | None:
    """The caller's identity; None with tokens off. 401 with `WWW-Authenticate: Bearer` when
    the token is missing, malformed, expired, not yet valid, revoked or badly signed."""
    auth = _state(request).auth
    if not auth.enabled:
        return None
    try:
        return await auth.identify(None if credentials is None else credentials.credentials)
    except InvalidToken as exc:
        challenge = "Bearer" if credentials is None else 'Bearer error="invalid_token"'
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": challenge}) from None


IdentityDep = Annotated[Identity | None, Depends(get_identity)]


async def require_admin(identity: IdentityDep) -> None:
    """The gate of the fleet routes (/api/drones, /api/applications, /api/queues): admins only
    when tokens are on (403 for another valid token, 401 without one)."""
    if identity is not None and identity.role != "admin":
        raise Forbidden("the fleet view needs an admin token")


AdminDep = Depends(require_admin)
