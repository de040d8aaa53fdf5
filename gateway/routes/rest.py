"""The spec's five REST endpoints, plus cancel and the catch-up listing (extensions)."""

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query

from gateway import auth
from gateway.deps import IdentityDep, StoreDep, TasksDep
from gateway.routes.responses import (
    ALREADY_FINISHED,
    EVERY_ROUTE,
    NOT_FOUND,
    TOO_LARGE,
    DroneResults,
    DroneTasks,
    ProcessingResult,
    ProcessingTask,
    TaskPage,
    answers,
)
from gateway.routes.strict_json import StrictJsonRoute
from shared.clock import normalize_timestamp
from shared.errors import TaskAlreadyFinished, TaskNotFound
from shared.ids import ID_PATTERN
from shared.lifecycle import TaskStatus
from shared.protocol import CancelTaskResponse, CreateTaskRequest, CreateTaskResponse

router = APIRouter(prefix="/api", route_class=StrictJsonRoute, responses=EVERY_ROUTE)

ClientIdPath = Annotated[str, Path(pattern=ID_PATTERN)]
TASK_NOT_FOUND = "Processing task not found"
RESULT_NOT_FOUND = "Processing result not found"


@router.post("/processing-tasks", response_model=CreateTaskResponse, responses=TOO_LARGE)
async def create_processing_task(
    body: CreateTaskRequest, tasks: TasksDep, identity: IdentityDep
) -> CreateTaskResponse:
    auth.check_submit(identity, body.app_id, body.drone_id)
    outcome = await tasks.submit(body.app_id, body)
    return CreateTaskResponse(task_id=outcome.task.task_id)


@router.get("/processing-tasks", response_model=None, responses=answers(TaskPage))
async def list_processing_tasks(
    store: StoreDep,
    identity: IdentityDep,
    app_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    status: TaskStatus | None = None,
    updated_since: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    app_id = auth.listed_app(identity, app_id)
    since = None
    if updated_since is not None:
        try:
            since = normalize_timestamp(updated_since)
        except ValueError:
            raise _invalid("updated_since", "must be an ISO 8601 timestamp") from None
    try:
        page = await store.list_tasks(
            app_id=app_id, status=status, updated_since=since, limit=limit, cursor=cursor
        )
    except ValueError:
        raise _invalid("cursor", "is not a cursor this server issued") from None
    return {
        "tasks": [task.public_dict() for task in page.tasks],
        "count": len(page.tasks),
        "next_cursor": page.next_cursor,
    }


@router.get(
    "/processing-tasks/drone/{drone_id}/pending", response_model=None, responses=answers(DroneTasks)
)
async def pending_tasks_for_drone(
    drone_id: ClientIdPath,
    store: StoreDep,
    identity: IdentityDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
) -> dict[str, Any]:
    app_id = auth.drone_view(identity, drone_id)
    tasks = await store.pending_for_drone(drone_id, limit, app_id=app_id)
    return {"tasks": [t.public_dict() for t in tasks], "count": len(tasks), "drone_id": drone_id}


@router.get(
    "/processing-tasks/{task_id}",
    response_model=None,
    responses={**answers(ProcessingTask), **NOT_FOUND},
)
async def get_processing_task(
    task_id: str, store: StoreDep, identity: IdentityDep
) -> dict[str, Any]:
    task = await store.get_task(task_id)
    if task is None or not auth.may_see(identity, task):
        raise HTTPException(404, TASK_NOT_FOUND)
    return task.public_dict()


@router.post(
    "/processing-tasks/{task_id}/cancel",
    response_model=CancelTaskResponse,
    responses={**NOT_FOUND, **ALREADY_FINISHED},
)
async def cancel_processing_task(
    task_id: str, tasks: TasksDep, store: StoreDep, identity: IdentityDep
) -> CancelTaskResponse:
    if identity is not None:
        owned = await store.get_task(task_id)
        if owned is None or not auth.may_cancel(identity, owned):
            raise HTTPException(404, TASK_NOT_FOUND)
    try:
        task = await tasks.cancel(task_id)
    except TaskNotFound:
        raise HTTPException(404, TASK_NOT_FOUND) from None
    except TaskAlreadyFinished:
        raise HTTPException(409, "Processing task already finished") from None
    return CancelTaskResponse(task_id=task.task_id, status=task.status)


@router.get(
    "/processing-results/{task_id}",
    response_model=None,
    responses={**answers(ProcessingResult), **NOT_FOUND},
)
async def get_processing_result(
    task_id: str, store: StoreDep, identity: IdentityDep
) -> dict[str, Any]:
    if identity is not None:
        task = await store.get_task(task_id)
        if task is None or not auth.may_see(identity, task):
            raise HTTPException(404, RESULT_NOT_FOUND)
    result = await store.get_result(task_id)
    if result is None:
        raise HTTPException(404, RESULT_NOT_FOUND)
    return result.public_dict()


@router.get(
    "/processing-results/drone/{drone_id}",
    response_model=None,
    responses=answers(DroneResults),
)
async def results_for_drone(
    drone_id: ClientIdPath,
    store: StoreDep,
    identity: IdentityDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    app_id = auth.drone_view(identity, drone_id)
    results = await store.results_for_drone(drone_id, limit, app_id=app_id)
    return {
        "results": [r.public_dict() for r in results],
        "count": len(results),
        "drone_id": drone_id,
    }


def _invalid(field: str, message: str) -> HTTPException:
    return HTTPException(
        422, [{"loc": ["query", field], "msg": f"{field} {message}", "type": "value_error"}]
    )
