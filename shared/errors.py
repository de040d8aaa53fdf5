"""The one exception tree of droneflow. Adapters translate driver errors into it.

DroneflowError
├── ConfigurationError        settings that cannot work (bad URL scheme, …)
├── BrokerError
│   └── BrokerUnavailable     transient: the broker cannot be reached right now
├── StoreError
│   └── StoreUnavailable      transient: the store cannot be reached right now
└── TaskError                 a request about a task that cannot be honoured
    ├── TaskNotFound
    ├── TaskNotYours          a drone reported on a task assigned to another drone
    └── TaskAlreadyFinished   the task is in a terminal state (cancel → 409)
"""


class DroneflowError(Exception):
    """Base of every error droneflow raises on purpose."""


class ConfigurationError(DroneflowError):
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
    def __init__(self, task_id: str, message: str | None = None) -> None:
        super().__init__(message or f"{type(self).__name__}: {task_id}")
        self.task_id = task_id


class TaskNotFound(TaskError):
    pass


class TaskNotYours(TaskError):
    pass


class TaskAlreadyFinished(TaskError):
    pass


TRANSIENT_ERRORS: tuple[type[DroneflowError], ...] = (BrokerUnavailable, StoreUnavailable)
