"""The stored documents: one task per `processingTasks` row, one result per `processingResults` row.

Field names follow the spec; everything after `updated_at` on a task is an extension.
The fields in INTERNAL_TASK_FIELDS are bookkeeping for delivery and never leave the server.
"""

from typing import Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, JsonValue

from shared.lifecycle import TERMINAL_STATUSES, ErrorCode, TaskStatus

M = TypeVar("M", bound=BaseModel)

DeliveryState = Literal["queued", "delivered"]
"""`queued`: waiting in (or on its way to) the drone's queue. `delivered`: a drone holds it."""

DEFAULT_PRIORITY: Final = 2
MIN_PRIORITY: Final = 1
MAX_PRIORITY: Final = 5

INTERNAL_TASK_FIELDS: Final = frozenset({"delivery", "dispatched_at", "notified_at"})

_new = object.__new__
_setattr = object.__setattr__


def construct_trusted(cls: type[M], values: dict[str, Any]) -> M:
    """A model from values this process validated or wrote itself, with every field present.

    BaseModel.model_construct minus its per-field default and alias handling, three times
    faster, for the hot path (rows the store wrote, envelopes our services encoded from
    validated models). The caller's dict becomes the model's, so it must not be reused."""
    record: M = _new(cls)
    _setattr(record, "__dict__", values)
    _setattr(record, "__pydantic_fields_set__", set(values))
    _setattr(record, "__pydantic_extra__", None)
    _setattr(record, "__pydantic_private__", None)
    return record


class NewTask(BaseModel):
    """What a gateway asks the store to create; the store adds status, attempts and timestamps."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    app_id: str
    drone_id: str
    task_type: str
    input_data: dict[str, JsonValue]
    priority: int = DEFAULT_PRIORITY
    max_attempts: int = 3
    timeout_s: float | None = None
    ttl_s: float | None = None
    idempotency_key: str | None = None


class TaskRecord(BaseModel):
    task_id: str
    app_id: str
    drone_id: str
    task_type: str
    input_data: dict[str, JsonValue]
    status: TaskStatus = "pending"
    priority: int = DEFAULT_PRIORITY
    created_at: str
    updated_at: str
    attempts: int = 0
    max_attempts: int = 3
    timeout_s: float | None = None
    ttl_s: float | None = None
    idempotency_key: str | None = None
    delivered_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    error_code: ErrorCode | None = None
    error_message: str | None = None
    delivery: DeliveryState = "queued"
    dispatched_at: str | None = None
    notified_at: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def public_dict(self) -> dict[str, Any]:
        """The task as REST shows it: the spec's fields plus the documented extensions."""
        return self.model_dump(exclude=set(INTERNAL_TASK_FIELDS))


class ResultRecord(BaseModel):
    result_id: str
    task_id: str
    drone_id: str
    result_data: dict[str, JsonValue]
    processing_time: float | None = None
    success: bool
    error_message: str | None = None
    timestamp: str

    def public_dict(self) -> dict[str, Any]:
        return self.model_dump()
