"""Every WebSocket frame as a pydantic model, per socket and direction, with the close codes:
what /asyncapi.json and docs/protocol.md are generated from.

A frame a client sends carries in `data` the model of shared.protocol that the server validates
it with. Frames the server sends are built as dicts by shared.protocol's `*_frame` functions,
so that no model sits on the hot path; the models here describe them, and
tests/e2e/test_frames_documented.py holds every frame a real server sends to them.
"""

from dataclasses import dataclass
from typing import Annotated, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from shared.lifecycle import TaskStatus
from shared.protocol import (
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_POLICY_VIOLATION,
    CLOSE_SUPERSEDED,
    CLOSE_TRY_AGAIN_LATER,
    ERR_ALREADY_FINISHED,
    ERR_FORBIDDEN,
    ERR_ID_MISMATCH,
    ERR_INVALID_JSON,
    ERR_INVALID_MESSAGE,
    ERR_INVALID_STATUS,
    ERR_NOT_DELIVERED,
    ERR_NOT_YOURS,
    ERR_RATE_LIMITED,
    ERR_TOO_MANY_PENDING,
    ERR_UNAVAILABLE,
    ERR_UNKNOWN_TASK,
    ERR_UNKNOWN_TYPE,
    CancelTask,
    DroneResult,
    DroneStatusUpdate,
    TaskRequest,
)

CLOSE_SERVICE_RESTART: Final = 1012
"""Sent by uvicorn to every open socket when the server shuts down (RFC 6455 §7.4.1)."""


class Frame(BaseModel):
    """A JSON object with a string `type`; fields a receiver does not know are to be ignored."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


# --- what clients send ---------------------------------------------------------------------


class Ping(Frame):
    """Answered with `pong` once every frame sent before it was handled."""

    type: Literal["ping"]


class SubmitTask(Frame):
    """Creates a task, as POST /api/processing-tasks does; `data.app_id` may be left out (the
    socket's path names the application). With a `request_id`, answered by `task_created`."""

    type: Literal["processing_task"]
    data: TaskRequest
    request_id: JsonValue = Field(
        default=None, description="Any JSON value, echoed in `task_created`"
    )


class CancelTaskRequest(Frame):
    """Cancels a task of this application; answered by `task_cancelled`."""

    type: Literal["cancel_task"]
    data: CancelTask


class ReportResult(Frame):
    """A drone's result: ends the task as completed (`success`) or failed (`drone_error`)."""

    type: Literal["processing_result"]
    data: DroneResult


class ReportStatus(Frame):
    """A drone's progress on a task it holds: `status` is `processing`, progress goes in
    `additional_data`."""

    type: Literal["task_status_update"]
    data: DroneStatusUpdate


# --- what the server sends -----------------------------------------------------------------


class ConnectionEstablished(Frame):
    """The first frame on every accepted socket."""

    type: Literal["connection_established"]
    client_id: str
    client_type: Literal["application", "drone"]
    timestamp: str
    max_frame_bytes: int | None = Field(
        default=None,
        description="The largest frame the gateway reads; a larger one closes the socket (1009)",
    )


class Pong(Frame):
    type: Literal["pong"]


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Error(Frame):
    """A frame the server could not use. The socket stays open; see the error codes."""

    type: Literal["error"]
    code: str
    message: str
    errors: list[FieldError] | None = Field(
        default=None, description="`invalid_message`: what is wrong with each field"
    )
    task_id: str | None = Field(default=None, description="The task the refused frame named")
    request_id: JsonValue = Field(default=None, description="The refused frame's `request_id`")
    message_type: str | None = Field(
        default=None, description="`unavailable`, limits: the type of the frame to send again"
    )
    retry_after: float | None = Field(
        default=None, description="`rate_limited`: seconds to wait before sending again"
    )


class TaskData(BaseModel):
    app_id: str
    drone_id: str
    task_type: str
    input_data: dict[str, JsonValue]
    priority: int = Field(ge=1, le=5)


class TaskDelivery(Frame):
    """A task for the drone. Sent again, unchanged but for `"resumed": true`, to a drone that
    reconnects while holding it: skip it if it is already running."""

    type: Literal["processing_task"]
    task_id: str
    task_data: TaskData
    attempt: int = Field(description="Counts in-progress timeouts: a new try has a new number")
    timestamp: str
    resumed: Literal[True] | None = Field(
        default=None, description="Present (true) only on a delivery sent again"
    )


class TaskWithdrawn(Frame):
    """The drone should stop working on a task: its application cancelled it, or it timed out."""

    type: Literal["task_cancelled"]
    task_id: str
    reason: Literal["cancelled", "timeout"]


class TaskCreated(Frame):
    """The answer to a `processing_task` frame that carried a `request_id`."""

    type: Literal["task_created"]
    request_id: JsonValue
    task_id: str
    created: bool = Field(description="false when an `idempotency_key` named an existing task")


class TaskCancelled(Frame):
    """The answer to `cancel_task`; the `cancelled` status update follows."""

    type: Literal["task_cancelled"]
    task_id: str
    request_id: JsonValue


class StatusUpdate(Frame):
    """Each status change of one of the application's tasks (also the final one)."""

    type: Literal["task_status_update"]
    task_id: str
    status: TaskStatus
    drone_id: str
    additional_data: dict[str, JsonValue] = Field(
        description="The drone's progress data; `error_code` and `error_message` on failure"
    )
    timestamp: str


class ResultReceived(Frame):
    """A drone's result for one of the application's tasks."""

    type: Literal["processing_result_received"]
    result_id: str
    task_id: str
    result_data: dict[str, JsonValue]
    drone_id: str
    app_id: str
    success: bool
    processing_time: float | None
    error_message: str | None
    timestamp: str


ApplicationSends = Annotated[SubmitTask | CancelTaskRequest | Ping, Field(discriminator="type")]
ApplicationReceives = Annotated[
    ConnectionEstablished
    | TaskCreated
    | TaskCancelled
    | StatusUpdate
    | ResultReceived
    | Pong
    | Error,
    Field(discriminator="type"),
]
DroneSends = Annotated[ReportResult | ReportStatus | Ping, Field(discriminator="type")]
DroneReceives = Annotated[
    ConnectionEstablished | TaskDelivery | TaskWithdrawn | Pong | Error,
    Field(discriminator="type"),
]


def members(union: object) -> tuple[type[Frame], ...]:
    """The frame models of one of the unions above."""
    inner = get_args(union)[0]
    return tuple(get_args(inner))


@dataclass(frozen=True)
class Channel:
    name: Literal["application", "drone"]
    address: str
    parameter: str
    description: str
    client_sends: tuple[type[Frame], ...]
    server_sends: tuple[type[Frame], ...]


CHANNELS: Final = (
    Channel(
        "application",
        "/ws/application/{app_id}",
        "app_id",
        "An application submits and cancels tasks, and receives the status updates and results "
        "of its tasks (also those it missed while offline, after it reconnects).",
        members(ApplicationSends),
        members(ApplicationReceives),
    ),
    Channel(
        "drone",
        "/ws/drone/{drone_id}",
        "drone_id",
        "A drone receives tasks (`?capacity=N` at once, default 1) and reports progress and "
        "results. A task it held is sent again after a reconnect, with `resumed`.",
        members(DroneSends),
        members(DroneReceives),
    ),
)

ID_DESCRIPTION: Final = "1 to 64 of A-Z a-z 0-9 _ -"

CLOSE_CODES: Final[dict[int, str]] = {
    CLOSE_POLICY_VIOLATION: "Before the welcome: an invalid id in the path, a bad `?capacity=`, "
    "too many sockets of one id, or a missing or refused token (the reason says which). Later: "
    "the token expired or was revoked, or the socket kept sending over its frame rate. "
    "Fix the cause before reconnecting.",
    CLOSE_MESSAGE_TOO_BIG: "A frame over `DRONEFLOW_MAX_FRAME_BYTES`.",
    CLOSE_SERVICE_RESTART: "The server is shutting down (a restart or an upgrade): reconnect, "
    "with backoff, to this or another gateway; nothing accepted is lost.",
    CLOSE_TRY_AGAIN_LATER: "The store or the broker is unreachable: reconnect later, with backoff.",
    CLOSE_SUPERSEDED: "Drones only: a newer connection with the same drone id took over this "
    "one, and its tasks. Do not reconnect this one.",
}

ERROR_CODES: Final[dict[str, str]] = {
    ERR_INVALID_JSON: "the frame is not JSON",
    ERR_INVALID_MESSAGE: "not an object with a string `type`, or `data` has invalid fields "
    "(`errors` says which)",
    ERR_UNKNOWN_TYPE: "no such message type on this socket",
    ERR_UNKNOWN_TASK: "no such task (of this application, for `cancel_task`)",
    ERR_NOT_YOURS: "the task is assigned to another drone",
    ERR_ID_MISMATCH: "`data.app_id` or `data.drone_id` differs from the id in the path",
    ERR_FORBIDDEN: "the token may not submit to this drone",
    ERR_NOT_DELIVERED: "a report on a task this drone was not sent yet",
    ERR_INVALID_STATUS: "a drone reports only `processing`; it ends a task with a result",
    ERR_ALREADY_FINISHED: "`cancel_task` of a task that already ended",
    ERR_UNAVAILABLE: "the store or the broker is away: send the frame (`message_type`) again",
    ERR_RATE_LIMITED: "over a rate limit: send again after `retry_after` seconds",
    ERR_TOO_MANY_PENDING: "the application has too many pending tasks: send again later",
}
