"""What each REST route answers, declared once so /openapi.json types every status a client can
see (the fuzzers hold the server to it: status, content type and body schema).

The documents below only describe: the routes return `public_dict()`s as they are, so that a
listing of a thousand tasks is not validated a second time on its way out. Their fields are
exactly those of shared.models (tests/unit/test_openapi_models.py holds them to it)."""

from typing import Any, Final

from pydantic import BaseModel, Field, JsonValue

from shared.lifecycle import ErrorCode, TaskStatus


class ErrorBody(BaseModel):
    detail: JsonValue = Field(
        description="A message, or for 422 a list of {loc, msg, type} per invalid field"
    )


class ProcessingTask(BaseModel):
    """A task as the store holds it: the spec's fields, then the extensions."""

    task_id: str
    app_id: str
    drone_id: str
    task_type: str
    input_data: dict[str, JsonValue]
    status: TaskStatus
    priority: int = Field(ge=1, le=5)
    created_at: str = Field(description="ISO 8601, UTC")
    updated_at: str = Field(description="ISO 8601, UTC")
    attempts: int
    max_attempts: int
    timeout_s: float | None
    ttl_s: float | None
    idempotency_key: str | None
    delivered_at: str | None
    started_at: str | None
    finished_at: str | None
    error_code: ErrorCode | None
    error_message: str | None


class ProcessingResult(BaseModel):
    result_id: str
    task_id: str
    drone_id: str
    result_data: dict[str, JsonValue]
    processing_time: float | None = Field(description="seconds, as the drone reported it")
    success: bool
    error_message: str | None
    timestamp: str


class TaskPage(BaseModel):
    tasks: list[ProcessingTask]
    count: int
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null at the end"
    )


class DroneTasks(BaseModel):
    tasks: list[ProcessingTask]
    count: int
    drone_id: str


class DroneResults(BaseModel):
    results: list[ProcessingResult]
    count: int
    drone_id: str


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str = Field(description="`ready`, or `unavailable` (then 503)")
    store: str = Field(description="`ok` or `unavailable`")
    rabbitmq: str = Field(description="`ok` or `unavailable`")
    reason: str | None = Field(
        default=None, description="present when not ready: which dependency, and why"
    )


Responses = dict[int | str, dict[str, Any]]


def answers(model: type[BaseModel], description: str = "Successful Response") -> Responses:
    """A 200 declared without response_model: FastAPI then neither validates nor filters what
    the route returns."""
    return {200: {"model": model, "description": description}}


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


EVERY_ROUTE: Final[Responses] = {
    401: _error("no valid bearer token (tokens on)"),
    403: _error("the token is valid but may not do this"),
    414: _error("the request line is too long"),
    429: _error("too many requests or pending tasks: retry after `Retry-After` seconds"),
    503: _error("the store is unavailable: retry after `Retry-After` seconds"),
}


def _json_error(description: str) -> dict[str, Any]:
    """For a route whose own answer is not JSON (its errors still are)."""
    # JsonValue, which ErrorBody refers to, is in components/schemas through the other routes.
    schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ADMIN_ONLY: Final[Responses] = {
    401: _json_error("no valid bearer token (tokens on)"),
    403: _json_error("only an admin token may read this"),
}
NOT_FOUND: Final[Responses] = {404: _error("no such task, or not one of yours")}
ALREADY_FINISHED: Final[Responses] = {409: _error("the task already finished")}
TOO_LARGE: Final[Responses] = {413: _error("the body is over DRONEFLOW_MAX_BODY_BYTES")}
