"""Records for tests that need a task but not any particular one, and tasks and results put
in a store for the tests of the store itself."""

from typing import Any

from shared.clock import now_iso
from shared.ids import new_object_id, new_task_id
from shared.models import NewTask, ResultRecord, TaskRecord
from shared.store import TaskStore


def a_new_task(app_id: str = "A1", drone_id: str = "D1", **options: Any) -> NewTask:
    return NewTask(
        task_id=new_task_id(),
        app_id=app_id,
        drone_id=drone_id,
        task_type="image_analysis",
        input_data={},
        **options,
    )


# --- tasks and results in a store, for the store's own tests ---------------------------------

DRONE = "Drone001"
APP = "App001"


def new_task(
    *, app_id: str = APP, drone_id: str = DRONE, priority: int = 2, **options: object
) -> NewTask:
    return NewTask.model_validate(
        {
            "task_id": new_task_id(),
            "app_id": app_id,
            "drone_id": drone_id,
            "task_type": "image_analysis",
            "input_data": {
                "image_url": "https://example.com/image.jpg",
                "parameters": {"confidence_threshold": 0.8, "max_objects": 10, "tags": ["a"]},
            },
            "priority": priority,
            **options,
        }
    )


def result_for(
    task_id: str,
    *,
    success: bool = True,
    error_message: str | None = None,
    timestamp: str | None = None,
    drone_id: str = DRONE,
) -> ResultRecord:
    return ResultRecord(
        result_id=new_object_id(),
        task_id=task_id,
        drone_id=drone_id,
        result_data={"detected_objects": [{"type": "person", "confidence": 0.95}]},
        processing_time=1.25,
        success=success,
        error_message=error_message,
        timestamp=timestamp or now_iso(),
    )


async def create(store: TaskStore, **options: Any) -> TaskRecord:
    return (await store.create_task(new_task(**options))).task


async def claimed(store: TaskStore, **options: Any) -> TaskRecord:
    task = await create(store, **options)
    delivered = await store.claim(task.task_id, task.drone_id)
    assert delivered is not None
    return delivered
