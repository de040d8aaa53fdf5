"""`GET /asyncapi.json`: an AsyncAPI 3.0 document of both WebSocket channels, generated from the
frame models in shared.frames (whose client frames carry the models the server validates with).

The document describes the server: it receives what clients send and sends what they receive.
Message names are the models' names; a message's `name` is its `type`. Each message has an
example built from its model (`example`), which docs/protocol.md shows too."""

from functools import cache
from importlib.metadata import version
from typing import Any, Final, get_args, get_origin

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shared.frames import CHANNELS, CLOSE_CODES, ERROR_CODES, ID_DESCRIPTION, Channel, Frame

ASYNCAPI_VERSION: Final = "3.0.0"
SCHEMA_REF: Final = "#/components/schemas/{model}"

SAMPLE_VALUES: Final[dict[str, Any]] = {
    "task_id": "task_0190f5a2c4e1b7d3a9f26e48",
    "result_id": "6650c1e2a4b5c6d7e8f90a1b",
    "app_id": "App001",
    "drone_id": "Drone001",
    "client_id": "Drone001",
    "client_type": "drone",
    "task_type": "image_analysis",
    "input_data": {"image_url": "https://example.com/image.jpg"},
    "priority": 3,
    "attempt": 1,
    "status": "processing",
    "additional_data": {"progress": 50},
    "result_data": {"detected_objects": [{"class": "person", "confidence": 0.92}]},
    "processing_time": 0.85,
    "success": True,
    "error_message": None,
    "timestamp": "2024-01-01T12:00:00Z",
    "request_id": "req-1",
    "code": "unknown_task",
    "message": "no task 'task_0190f5a2c4e1b7d3a9f26e48' of this application",
    "created": True,
}
"""Values by field name, so examples read like real frames. An optional field appears in an
example only when it has a value here (and that value is not None)."""


FIELD_NOTES: Final[dict[str, str]] = {
    "timeout_s": "In-progress timeout, in seconds: a drone holding the task longer loses it, and "
    "it is tried again (default `DRONEFLOW_DEFAULT_TIMEOUT_S`)",
    "ttl_s": "How long the task may wait for a drone, in seconds, before it fails as `expired`",
    "max_attempts": "In-progress timeouts before the task fails with `max_attempts` (default 3)",
    "idempotency_key": "Per application: the same key again answers with the same task",
    "priority": "1 (lowest) to 5 (highest)",
    "task_type": "What the drone is to do, e.g. `image_analysis`",
    "input_data": "What the drone needs for the task",
    "TaskRequest.app_id": "If present, equal to the id in the path",
    "TaskRequest.drone_id": "The drone to run the task",
    "DroneResult.drone_id": "If present, equal to the id in the path",
    "DroneStatusUpdate.drone_id": "If present, equal to the id in the path",
    "DroneStatusUpdate.status": "`processing`, the only status a drone reports",
    "DroneStatusUpdate.additional_data": 'Progress for the application, e.g. `{"progress": 50}`',
    "DroneResult.timestamp": "ISO 8601: when the drone finished",
    "CancelTask.request_id": "Any JSON value, echoed in `task_cancelled`",
    "TaskCreated.request_id": "The `request_id` of the `processing_task` frame",
    "TaskCancelled.request_id": "The `request_id` of the `cancel_task` frame",
    "TaskWithdrawn.reason": "`cancelled` by its application, or `timeout` (in progress too long)",
    "StatusUpdate.status": "The task's status now",
    "StatusUpdate.timestamp": "ISO 8601, UTC: when the change was stored, the task's `updated_at`",
    "result_data": "The drone's result",
    "processing_time": "Seconds the drone spent on the task",
    "success": "false ends the task as failed (`drone_error`)",
    "error_message": "Why the drone failed the task",
    "task_id": "The task's id",
    "result_id": "The result's id",
    "client_id": "The id in the socket's path",
    "app_id": "The application that created the task",
    "drone_id": "The drone the task is assigned to",
    "code": "One of the error codes",
    "message": "What went wrong, for people",
    "timestamp": "ISO 8601, UTC",
}
"""Descriptions of fields whose model has none, by `Model.field` or else by field name."""


def _describe_fields(schemas: dict[str, Any]) -> None:
    for model, schema in schemas.items():
        for name, prop in schema.get("properties", {}).items():
            note = FIELD_NOTES.get(f"{model}.{name}", FIELD_NOTES.get(name))
            if note is not None and name != "type":
                prop.setdefault("description", note)


def example(model: type[BaseModel]) -> dict[str, Any]:
    """An instance of `model` as JSON: SAMPLE_VALUES where they name the field, else the first
    value the field's type allows. Tests check that each one validates against its model."""
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        sample = SAMPLE_VALUES.get(name)
        if not field.is_required() and sample is None:
            continue
        values[name] = sample if name in SAMPLE_VALUES else _first_value(field.annotation)
    return values


def _first_value(annotation: Any) -> Any:
    origin, args = get_origin(annotation), get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return example(annotation)
    if origin is not None and str(origin) == "typing.Literal":
        return args[0]
    if origin is list:
        return []
    if origin is dict:
        return {}
    if args:  # a union: its first member
        return _first_value(args[0])
    simple: dict[Any, Any] = {str: "text", int: 1, float: 1.0, bool: True}
    return simple.get(annotation)


def _message(model: type[Frame]) -> dict[str, Any]:
    message_type = model.model_fields["type"].annotation
    summary = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    message: dict[str, Any] = {
        "name": get_args(message_type)[0],
        "title": model.__name__,
        "contentType": "application/json",
        "payload": {"$ref": SCHEMA_REF.format(model=model.__name__)},
        "examples": [{"name": model.__name__, "payload": example(model)}],
    }
    if summary:
        message["summary"] = summary
    return message


def _channel(channel: Channel) -> dict[str, Any]:
    names = [m.__name__ for m in (*channel.client_sends, *channel.server_sends)]
    query: dict[str, Any] = {
        "token": {"type": "string", "description": "A bearer token, where no header can be sent"}
    }
    if channel.name == "drone":
        query["capacity"] = {"type": "integer", "minimum": 1, "default": 1}
    return {
        "address": channel.address,
        "title": f"{channel.name} socket",
        "description": channel.description,
        "parameters": {
            channel.parameter: {"description": f"The {channel.name} id: {ID_DESCRIPTION}"}
        },
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in names},
        "bindings": {
            "ws": {
                "method": "GET",
                "query": {"type": "object", "properties": query},
                "headers": {
                    "type": "object",
                    "properties": {
                        "Authorization": {"type": "string", "description": "Bearer <token>"}
                    },
                },
                "bindingVersion": "0.1.0",
            }
        },
        "x-close-codes": {str(code): meaning for code, meaning in CLOSE_CODES.items()},
    }


def _operation(channel: Channel, action: str, models: tuple[type[Frame], ...]) -> dict[str, Any]:
    direction = "from" if action == "receive" else "to"
    return {
        "action": action,
        "title": f"{action} {direction} {channel.name}",
        "channel": {"$ref": f"#/channels/{channel.name}"},
        "messages": [{"$ref": f"#/channels/{channel.name}/messages/{m.__name__}"} for m in models],
    }


def frame_models() -> list[type[Frame]]:
    """Every frame model of every channel, once each, in channel order."""
    seen: dict[str, type[Frame]] = {}
    for channel in CHANNELS:
        for model in (*channel.client_sends, *channel.server_sends):
            seen.setdefault(model.__name__, model)
    return list(seen.values())


@cache
def asyncapi_document() -> dict[str, Any]:
    models = frame_models()
    _, schemas = models_json_schema(
        [(model, "validation") for model in models], ref_template=SCHEMA_REF
    )
    _describe_fields(schemas["$defs"])
    operations: dict[str, Any] = {}
    for channel in CHANNELS:
        title = channel.name.capitalize()
        operations[f"receiveFrom{title}"] = _operation(channel, "receive", channel.client_sends)
        operations[f"sendTo{title}"] = _operation(channel, "send", channel.server_sends)
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "droneflow WebSockets",
            "version": version("droneflow"),
            "description": (
                "The WebSocket side of droneflow; the REST side is /openapi.json (/docs). Every "
                "frame is a JSON object with a string `type`. A frame the server cannot use is "
                "answered with an `error` frame and the socket stays open. Close codes are in "
                "each channel's `x-close-codes`; `error` codes in `x-error-codes`."
            ),
        },
        "servers": {
            "gateway": {
                "host": "{host}",
                "protocol": "ws",
                "description": "A gateway; behind a TLS proxy use wss",
                "variables": {"host": {"default": "localhost:8000"}},
            }
        },
        "defaultContentType": "application/json",
        "channels": {channel.name: _channel(channel) for channel in CHANNELS},
        "operations": operations,
        "components": {
            "schemas": schemas["$defs"],
            "messages": {model.__name__: _message(model) for model in models},
        },
        "x-error-codes": ERROR_CODES,
    }


router = APIRouter(include_in_schema=False)


@router.get("/asyncapi.json")
async def asyncapi() -> JSONResponse:
    return JSONResponse(asyncapi_document())
