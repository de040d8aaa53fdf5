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
NOT_FOUND: Final[Responses] = {404: _error("no such task, or not one of yours")}
ALREADY_FINISHED: Final[Responses] = {409: _error("the task already finished")}
TOO_LARGE: Final[Responses] = {413: _error("the body is over DRONEFLOW_MAX_BODY_BYTES")}
