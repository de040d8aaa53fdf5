"""Records for tests that need a task but not any particular one."""

from typing import Any

from shared.ids import new_task_id
from shared.models import NewTask


def a_new_task(app_id: str = "A1", drone_id: str = "D1", **options: Any) -> NewTask:
    return NewTask(
        task_id=new_task_id(),
        app_id=app_id,
        drone_id=drone_id,
        task_type="image_analysis",
        input_data={},
        **options,
    )
