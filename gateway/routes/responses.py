"""The error answers each REST route may give, declared once so /openapi.json lists every
status a client can see (the fuzzers hold the server to it)."""

from typing import Any, Final

from pydantic import BaseModel, JsonValue


class ErrorBody(BaseModel):
    detail: JsonValue


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


Responses = dict[int | str, dict[str, Any]]

EVERY_ROUTE: Final[Responses] = {
    401: _error("no valid bearer token (tokens on)"),
    403: _error("the token is valid but may not do this"),
    414: _error("the request line is too long"),
    429: _error("too many requests or pending tasks: retry after `Retry-After` seconds"),
    503: _error("the store is unavailable: retry after `Retry-After` seconds"),
}


def _json_error(description: str) -> dict[str, Any]:
    """For a route whose own answer is not JSON (its errors still are)."""
    schema = {"schema": ErrorBody.model_json_schema()}
    return {"description": description, "content": {"application/json": schema}}


ADMIN_ONLY: Final[Responses] = {
    401: _json_error("no valid bearer token (tokens on)"),
    403: _json_error("only an admin token may read this"),
}
NOT_FOUND: Final[Responses] = {404: _error("no such task, or not one of yours")}
ALREADY_FINISHED: Final[Responses] = {409: _error("the task already finished")}
TOO_LARGE: Final[Responses] = {413: _error("the body is over DRONEFLOW_MAX_BODY_BYTES")}
