"""The fleet as the dashboard and `droneflow drones` see it: every drone and application
connected to any gateway, and the depths of the shared queues. Admin-only when tokens are on
(deps.require_admin). Extensions of the spec."""

from fastapi import APIRouter

from gateway.deps import AdminDep, StateDep, StoreDep
from gateway.presence import fleet_applications, fleet_drones
from gateway.routes.responses import EVERY_ROUTE
from shared.protocol import ApplicationList, DroneList, QueueDepths

router = APIRouter(prefix="/api", responses=EVERY_ROUTE, dependencies=[AdminDep])


@router.get("/drones", response_model=DroneList)
async def list_drones(store: StoreDep) -> DroneList:
    drones = await fleet_drones(store)
    return DroneList(drones=drones, count=len(drones))


@router.get("/applications", response_model=ApplicationList)
async def list_applications(store: StoreDep) -> ApplicationList:
    applications = await fleet_applications(store)
    return ApplicationList(applications=applications, count=len(applications))


@router.get("/queues", response_model=QueueDepths)
async def queue_depths(state: StateDep) -> QueueDepths:
    queues, broker = state.settings.queues, state.broker
    return QueueDepths(
        intake=await broker.queue_depth(queues.intake),
        drone_events=await broker.queue_depth(queues.drone_events),
        dead_letters=await broker.queue_depth(queues.dead_letters),
    )
