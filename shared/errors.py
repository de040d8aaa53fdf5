"""The one exception tree of droneflow. Adapters translate driver errors into it.

DroneflowError
├── ConfigurationError        settings that cannot work (bad URL scheme, …)
├── CannotListen              a server cannot take its address (port in use, …)
├── BrokerError
│   └── BrokerUnavailable     transient: the broker cannot be reached right now
├── StoreError
│   └── StoreUnavailable      transient: the store cannot be reached right now
└── TaskError                 a store command refused: the task stays as `.task` shows it
    ├── TaskNotFound          no task has this id (`.task` is None)
    ├── TaskNotYours          a drone reported on a task assigned to another drone
    ├── TaskAlreadyFinished   the task is terminal (cancel → 409; a second or late result,
    │                         whose stored result, if any, is `.result`)
    └── StatusNotReportable   a drone reported a status other than the lifecycle lets it

TaskStore commands raise the TaskError tree for refusals; lookups return None instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.models import ResultRecord, TaskRecord


class DroneflowError(Exception):
    """Base of every error droneflow raises on purpose."""


class ConfigurationError(DroneflowError):
    pass


class CannotListen(DroneflowError):
    pass


class BrokerError(DroneflowError):
    pass


class BrokerUnavailable(BrokerError):
    """Transient: retry later. Consumers requeue the message they were handling."""


class StoreError(DroneflowError):
    pass


class StoreUnavailable(StoreError):
    """Transient: retry later. Consumers requeue the message they were handling."""


class TaskError(DroneflowError):
    def __init__(
        self, task_id: str, message: str | None = None, *, task: TaskRecord | None = None
    ) -> None:
        super().__init__(message or f"{type(self).__name__}: {task_id}")
        self.task_id = task_id
        self.task = task
        """The task as the store holds it now, when the refusal found one."""


class TaskNotFound(TaskError):
    pass


class TaskNotYours(TaskError):
    pass


class TaskAlreadyFinished(TaskError):
    def __init__(
        self,
        task_id: str,
        message: str | None = None,
        *,
        task: TaskRecord | None = None,
        result: ResultRecord | None = None,
    ) -> None:
        super().__init__(task_id, message, task=task)
        self.result = result
        """The task's stored result, when a result was refused (it ended the task, or not)."""


class StatusNotReportable(TaskError):
    pass


TRANSIENT_ERRORS: tuple[type[DroneflowError], ...] = (BrokerUnavailable, StoreUnavailable)
