"""Every message that crosses a wire: REST bodies, WebSocket frames and broker envelopes.

Inbound models validate what clients send. Outbound frames are plain dicts built by the
`*_frame` functions and encoded once with orjson, because they sit on the hot path.
"""

from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StrictInt,
)

from shared.ids import ID_PATTERN
from shared.models import (
    DEFAULT_PRIORITY,
    MAX_PRIORITY,
    MIN_PRIORITY,
    ResultRecord,
    TaskRecord,
    construct_trusted,
)
from shared.storable import storable_document

ClientId = Annotated[str, Field(pattern=ID_PATTERN)]
Priority = Annotated[StrictInt, Field(ge=MIN_PRIORITY, le=MAX_PRIORITY)]
PositiveSeconds = Annotated[float, Field(gt=0, le=30 * 24 * 3600)]
Document = Annotated[dict[str, JsonValue], AfterValidator(storable_document)]

TASK_CREATED_MESSAGE: Final = "Processing task created successfully"

# --- WebSocket message types -------------------------------------------------------------
CONNECTION_ESTABLISHED: Final = "connection_established"
PROCESSING_TASK: Final = "processing_task"
PROCESSING_RESULT: Final = "processing_result"
PROCESSING_RESULT_RECEIVED: Final = "processing_result_received"
TASK_STATUS_UPDATE: Final = "task_status_update"
TASK_CREATED: Final = "task_created"
TASK_CANCELLED: Final = "task_cancelled"
CANCEL_TASK: Final = "cancel_task"
PING: Final = "ping"
PONG: Final = "pong"
ERROR: Final = "error"

# --- WebSocket error codes ---------------------------------------------------------------
ERR_INVALID_JSON: Final = "invalid_json"
ERR_UNKNOWN_TYPE: Final = "unknown_type"
ERR_INVALID_MESSAGE: Final = "invalid_message"
ERR_UNKNOWN_TASK: Final = "unknown_task"
ERR_NOT_YOURS: Final = "not_your_task"
ERR_ID_MISMATCH: Final = "id_mismatch"
ERR_FORBIDDEN: Final = "forbidden"
ERR_NOT_DELIVERED: Final = "task_not_delivered"
ERR_INVALID_STATUS: Final = "invalid_status"
ERR_ALREADY_FINISHED: Final = "task_already_finished"
ERR_UNAVAILABLE: Final = "unavailable"
ERR_RATE_LIMITED: Final = "rate_limited"
ERR_TOO_MANY_PENDING: Final = "too_many_pending"

# WebSocket close codes (RFC 6455 §7.4.1)
CLOSE_POLICY_VIOLATION: Final = 1008
CLOSE_MESSAGE_TOO_BIG: Final = 1009
CLOSE_TRY_AGAIN_LATER: Final = 1013
CLOSE_SUPERSEDED: Final = 4000
"""Private-use code: a newer connection with the same drone id took over this one."""


class _Inbound(BaseModel):
    # Clients written against the spec may send fields we do not know; ignore, never reject.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class TaskOptions(_Inbound):
    """Optional extensions; a body from the spec without them stays valid."""

    timeout_s: PositiveSeconds | None = None
    ttl_s: PositiveSeconds | None = None
    max_attempts: Annotated[StrictInt, Field(ge=1, le=100)] | None = None
    idempotency_key: Annotated[str, Field(min_length=1, max_length=128)] | None = None


class TaskRequest(TaskOptions):
    """A task as an application submits it. In a `processing_task` frame the socket's path names
    the application, so app_id is optional there."""

    app_id: ClientId | None = None
    drone_id: ClientId
    task_type: Annotated[str, Field(min_length=1, max_length=128)]
    input_data: Document
    priority: Priority = DEFAULT_PRIORITY


class CreateTaskRequest(TaskRequest):
    # The REST body names its application. No docstring: it would become the schema's
    # description in /openapi.json.
    app_id: ClientId


class CreateTaskResponse(BaseModel):
    task_id: str
    message: str = TASK_CREATED_MESSAGE


class CancelTaskResponse(BaseModel):
    task_id: str
    status: str
    message: str = "Processing task cancelled"


class DroneInfo(BaseModel):
    drone_id: str
    capacity: int
    tasks_held: int
    tasks_queued: int
    connected_since: str
    last_seen: str
    gateway: str


class DroneList(BaseModel):
    drones: list[DroneInfo]
    count: int


class ApplicationInfo(BaseModel):
    app_id: str
    connected_since: str
    gateways: list[str]


class ApplicationList(BaseModel):
    applications: list[ApplicationInfo]
    count: int


class QueueDepths(BaseModel):
    intake: int
    drone_events: int
    dead_letters: int


class DroneResult(_Inbound):
    task_id: Annotated[str, Field(min_length=1, max_length=128)]
    drone_id: ClientId | None = None
    result_data: Document = Field(default_factory=dict)
    processing_time: Annotated[float, Field(ge=0)] | None = None
    success: StrictBool
    error_message: Annotated[str, Field(max_length=4096)] | None = None
    timestamp: str | None = None


class DroneStatusUpdate(_Inbound):
    task_id: Annotated[str, Field(min_length=1, max_length=128)]
    drone_id: ClientId | None = None
    status: str
    additional_data: Document = Field(default_factory=dict)


class CancelTask(_Inbound):
    task_id: Annotated[str, Field(min_length=1, max_length=128)]
    request_id: JsonValue = None


# --- Outbound frames ---------------------------------------------------------------------


def welcome_frame(
    client_id: str,
    client_type: Literal["application", "drone"],
    ts: str,
    max_frame_bytes: int | None = None,
) -> bytes:
    """`max_frame_bytes` (a spec extension) tells a client which frames the gateway would close
    the socket over (1009), so that it can refuse them itself instead of reconnecting to send
    them again."""
    extra = {} if max_frame_bytes is None else {"max_frame_bytes": max_frame_bytes}
    return encode(
        {
            "type": CONNECTION_ESTABLISHED,
            "client_id": client_id,
            "client_type": client_type,
            "timestamp": ts,
            **extra,
        }
    )


def error_frame(code: str, message: str, **extra: JsonValue) -> bytes:
    return encode({"type": ERROR, "code": code, "message": message, **extra})


def drone_task_frame(task: TaskRecord, ts: str, *, resumed: bool = False) -> bytes:
    """`resumed` marks the same delivery sent again to a drone that reconnected: same
    `attempt`, not a new try. Present only then, so first deliveries stay the spec's frame."""
    extra: dict[str, JsonValue] = {"resumed": True} if resumed else {}
    return encode(
        {
            "type": PROCESSING_TASK,
            "task_id": task.task_id,
            "task_data": {
                "app_id": task.app_id,
                "drone_id": task.drone_id,
                "task_type": task.task_type,
                "input_data": task.input_data,
                "priority": task.priority,
            },
            "attempt": task.attempts,
            "timestamp": ts,
            **extra,
        }
    )


def result_received_frame(result: ResultRecord, app_id: str) -> bytes:
    return encode(
        {
            "type": PROCESSING_RESULT_RECEIVED,
            "result_id": result.result_id,
            "task_id": result.task_id,
            "result_data": result.result_data,
            "drone_id": result.drone_id,
            "app_id": app_id,
            "success": result.success,
            "processing_time": result.processing_time,
            "error_message": result.error_message,
            "timestamp": result.timestamp,
        }
    )


def status_update_frame(
    task: TaskRecord, additional_data: dict[str, JsonValue] | None = None
) -> bytes:
    """Stamped with the task's stored `updated_at`, the time of the change it tells of: a client
    that also read the task over REST can tell this change from a later one."""
    extra: dict[str, JsonValue] = dict(additional_data or {})
    if task.error_code is not None:
        extra.setdefault("error_code", task.error_code)
        extra.setdefault("error_message", task.error_message)
    return encode(
        {
            "type": TASK_STATUS_UPDATE,
            "task_id": task.task_id,
            "status": task.status,
            "drone_id": task.drone_id,
            "additional_data": extra,
            "timestamp": task.updated_at,
        }
    )


def task_cancelled_frame(task_id: str, reason: str) -> bytes:
    return encode({"type": TASK_CANCELLED, "task_id": task_id, "reason": reason})


def encode(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message)


# --- Broker queues and envelopes ---------------------------------------------------------


# Broker envelopes travel between our own services only: the gateway validated their content at
# the edge, so they are encoded and decoded with orjson, not re-validated on every hop.


def encode_task_envelope(task_id: str, drone_id: str, priority: int) -> bytes:
    """Intake queue and per-drone queues: the store holds the task, the message names it."""
    return orjson.dumps({"task_id": task_id, "drone_id": drone_id, "priority": priority})


def task_id_of_envelope(body: bytes) -> str:
    task_id: str = orjson.loads(body)["task_id"]
    return task_id


def decode_task_envelope(body: bytes) -> tuple[str, str, int]:
    data = orjson.loads(body)
    return data["task_id"], data["drone_id"], data["priority"]


class DroneEvent(BaseModel):
    """A drone's result or status update, checked by the gateway, for the result writer."""

    kind: Literal["result", "status"]
    drone_id: str
    app_id: str
    received_at: str
    result: DroneResult | None = None
    status: DroneStatusUpdate | None = None

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "kind": self.kind,
                "drone_id": self.drone_id,
                "app_id": self.app_id,
                "received_at": self.received_at,
                "result": self.result.model_dump() if self.result is not None else None,
                "status": self.status.model_dump() if self.status is not None else None,
            }
        )

    @classmethod
    def decode(cls, body: bytes) -> "DroneEvent":
        data = orjson.loads(body)
        # `encode` wrote it from validated models, so it is trusted as it stands, unless its
        # fields differ from ours (a service of another version during an upgrade).
        if data.keys() != _EVENT_FIELDS:
            return cls.model_validate(data)
        result, status = data["result"], data["status"]
        if result is not None:
            if result.keys() != _RESULT_FIELDS:
                return cls.model_validate(data)
            data["result"] = construct_trusted(DroneResult, result)
        if status is not None:
            if status.keys() != _STATUS_FIELDS:
                return cls.model_validate(data)
            data["status"] = construct_trusted(DroneStatusUpdate, status)
        return construct_trusted(cls, data)


def encode_drone_event(
    drone_id: str, app_id: str, received_at: str, report: DroneResult | DroneStatusUpdate
) -> bytes:
    """A DroneEvent's bytes without building the event: the gateway sends one per report, and
    `report` was validated when its frame came in. Its `__dict__` holds exactly its fields
    (`extra="ignore"`), in order, so it encodes as its model_dump would."""
    is_result = isinstance(report, DroneResult)
    return orjson.dumps(
        {
            "kind": "result" if is_result else "status",
            "drone_id": drone_id,
            "app_id": app_id,
            "received_at": received_at,
            "result": report.__dict__ if is_result else None,
            "status": None if is_result else report.__dict__,
        }
    )


_EVENT_FIELDS: Final = frozenset(DroneEvent.model_fields)
_RESULT_FIELDS: Final = frozenset(DroneResult.model_fields)
_STATUS_FIELDS: Final = frozenset(DroneStatusUpdate.model_fields)


class ControlMessage(BaseModel):
    """Tells the gateway holding `drone_id` to drop a task (cancelled by its app, or timed
    out), or to send it to the drone again (`resume`: a session of the drone that held it
    closed, and the drone may already be back on another gateway)."""

    kind: Literal["cancelled", "timeout", "resume"]
    task_id: str
    drone_id: str

    def encode(self) -> bytes:
        return orjson.dumps({"kind": self.kind, "task_id": self.task_id, "drone_id": self.drone_id})

    @classmethod
    def decode(cls, body: bytes) -> "ControlMessage":
        # Rare (a cancel or a timeout of a delivered task), so validated on every hop.
        return cls.model_validate_json(body)
