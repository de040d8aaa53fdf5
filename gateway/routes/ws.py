"""The application and drone WebSockets. A bad frame gets an `error` frame and the socket stays
open; only an invalid id in the path or a refused token (1008, before the welcome), a token
that expires or is revoked (1008), a socket over its limits (1008, gateway.socket_limits), or
an oversized frame (1009) closes it.

The two endpoints are served by `SocketRoutes`, a plain ASGI layer inside every middleware
(origins, socket limits, body size) and in front of FastAPI's routing: an idle drone socket
then holds no routing, exception-handling or dependency-injection frames for its lifetime
(about 11 kB each of 18,000 sockets), and each frame it sends skips their send wrappers."""

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from time import time
from typing import Any, Literal, TypeVar

import orjson
from fastapi import WebSocket, WebSocketDisconnect
from pydantic import BaseModel, JsonValue, ValidationError
from starlette._utils import get_route_path
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.admission import LimitExceeded
from gateway.auth import Forbidden, Refusal, check_submit
from gateway.deps import GatewayState
from gateway.drones import DroneIdMismatch, InvalidTimestamp, NotDelivered
from shared.clock import now_iso
from shared.errors import (
    TRANSIENT_ERRORS,
    StatusNotReportable,
    TaskAlreadyFinished,
    TaskError,
    TaskNotFound,
    TaskNotYours,
)
from shared.ids import is_valid_client_id
from shared.logs import bind_log_fields
from shared.protocol import (
    CANCEL_TASK,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_TRY_AGAIN_LATER,
    ERR_ALREADY_FINISHED,
    ERR_FORBIDDEN,
    ERR_ID_MISMATCH,
    ERR_INVALID_JSON,
    ERR_INVALID_MESSAGE,
    ERR_INVALID_STATUS,
    ERR_NOT_DELIVERED,
    ERR_NOT_YOURS,
    ERR_UNAVAILABLE,
    ERR_UNKNOWN_TASK,
    ERR_UNKNOWN_TYPE,
    PING,
    PONG,
    PROCESSING_RESULT,
    PROCESSING_TASK,
    TASK_CANCELLED,
    TASK_CREATED,
    TASK_STATUS_UPDATE,
    CancelTask,
    DroneResult,
    DroneStatusUpdate,
    TaskRequest,
    encode,
    error_frame,
    welcome_frame,
)
from shared.tokens import Identity

log = logging.getLogger(__name__)

MAX_PIPELINED_FRAMES = 64
Handle = Callable[[dict[str, Any]], Awaitable[str | None]]
PONG_FRAME = encode({"type": PONG}).decode()

M = TypeVar("M", bound=BaseModel)


class FrameError(Exception):
    """Answered with an `error` frame; the connection stays open."""

    def __init__(self, code: str, message: str, **extra: JsonValue) -> None:
        super().__init__(message)
        self.code = code
        self.extra = extra

    def frame(self, request_id: JsonValue) -> str:
        # The echoed request_id (a spec extension) lets a client multiplexing requests on one
        # socket fail the one this answers, instead of waiting for its timeout.
        echo: dict[str, JsonValue] = {} if request_id is None else {"request_id": request_id}
        return error_frame(self.code, str(self), **echo, **self.extra).decode()


_REQUEST_ID_IN_RAW = re.compile(rb'"request_id"\s*:\s*("(?:[^"\\]|\\.){0,256}"|-?[0-9]{1,20})')


def request_id_of(frame: dict[str, Any]) -> JsonValue:
    """The request_id a client gave a frame: at its top, or in `data` (cancel_task's place)."""
    request_id = frame.get("request_id")
    data = frame.get("data")
    if request_id is None and isinstance(data, dict):
        request_id = data.get("request_id")
    return request_id if isinstance(request_id, str | int) else None


def _request_id_of_raw(data: bytes) -> JsonValue:
    """The request_id of a frame that is not JSON, if one can be read out of it."""
    match = _REQUEST_ID_IN_RAW.search(data)
    if match is None:
        return None
    try:
        request_id = orjson.loads(match.group(1))
    except orjson.JSONDecodeError:
        return None
    return request_id if isinstance(request_id, str | int) else None


async def _open(
    websocket: WebSocket,
    client_id: str,
    client_type: Literal["application", "drone"],
    max_frame_bytes: int,
    refusal: Refusal | None = None,
) -> bool:
    """Accept, then either close with 1008 (before any welcome) or send the welcome."""
    await websocket.accept()
    if not is_valid_client_id(client_id):
        refusal = Refusal(f"invalid {client_type} id: use 1-64 of A-Z a-z 0-9 _ -")
    if refusal is not None:
        await websocket.close(refusal.code, refusal.reason)
        return False
    await websocket.send_text(
        welcome_frame(client_id, client_type, now_iso(), max_frame_bytes).decode()
    )
    return True


async def _frames(websocket: WebSocket, max_bytes: int) -> AsyncIterator[dict[str, Any]]:
    """Parsed frames until the peer goes away. Unparseable frames are answered here."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        data: bytes = text.encode() if text is not None else (message.get("bytes") or b"")
        if len(data) > max_bytes:
            # uvicorn enforces ws_max_size first; this guards other ASGI servers.
            await websocket.close(CLOSE_MESSAGE_TOO_BIG, "frame too large")
            return
        try:
            frame = orjson.loads(data)
        except orjson.JSONDecodeError:
            refusal = FrameError(ERR_INVALID_JSON, "frame is not valid JSON")
            await websocket.send_text(refusal.frame(_request_id_of_raw(data)))
            continue
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            refusal = FrameError(ERR_INVALID_MESSAGE, "a frame is an object with a string 'type'")
            echo = request_id_of(frame) if isinstance(frame, dict) else None
            await websocket.send_text(refusal.frame(echo))
            continue
        yield frame


def _validate(model: type[M], data: Any, message_type: str) -> M:
    if not isinstance(data, dict):
        raise FrameError(ERR_INVALID_MESSAGE, f"{message_type}: 'data' must be an object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors: list[JsonValue] = [
            {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        raise FrameError(
            ERR_INVALID_MESSAGE, f"{message_type}: invalid fields", errors=errors
        ) from None


async def _answer(websocket: WebSocket, handle: Handle, frame: dict[str, Any]) -> None:
    try:
        reply = await handle(frame)
    except FrameError as exc:
        reply = exc.frame(request_id_of(frame))
    except TaskError as exc:
        reply = _refusal(exc).frame(request_id_of(frame))
    except TRANSIENT_ERRORS as exc:
        websocket.app.state.gateway.health.dependency_of(exc).refused()
        data = frame.get("data")
        task_id = data.get("task_id") if isinstance(data, dict) else None
        # Name what failed, so a client knows which frame to send again.
        extra: dict[str, JsonValue] = {"message_type": frame["type"]}
        if isinstance(task_id, str):
            extra["task_id"] = task_id
        unavailable = FrameError(ERR_UNAVAILABLE, "temporarily unavailable, retry", **extra)
        reply = unavailable.frame(request_id_of(frame))
    if reply is not None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # the peer left meanwhile
            await websocket.send_text(reply)


def _refusal(exc: TaskError) -> FrameError:
    """The one place where a refused report about a task becomes an `error` frame."""
    task_id = exc.task_id
    match exc:
        case DroneIdMismatch():
            return FrameError(ERR_ID_MISMATCH, "data.drone_id must match the drone id of the path")
        case InvalidTimestamp():
            return FrameError(ERR_INVALID_MESSAGE, "data.timestamp is not ISO 8601")
        case NotDelivered():
            return FrameError(
                ERR_NOT_DELIVERED,
                "the task was not delivered to this drone yet: report only on tasks received",
                task_id=task_id,
            )
        case StatusNotReportable():
            return FrameError(
                ERR_INVALID_STATUS,
                "a drone reports 'processing' (with progress in additional_data); "
                "it ends a task with processing_result",
                task_id=task_id,
            )
        case TaskNotYours():
            return FrameError(
                ERR_NOT_YOURS, "the task is assigned to another drone", task_id=task_id
            )
        case TaskNotFound():
            return FrameError(ERR_UNKNOWN_TASK, f"no task {task_id!r}", task_id=task_id)
        case _:
            raise exc


class _Pipeline:
    """The pipelined frames of one socket in flight; made at its first such frame, as an idle
    drone socket (most of 18,000) never sends one."""

    __slots__ = ("in_flight", "slots")

    def __init__(self) -> None:
        self.in_flight: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(MAX_PIPELINED_FRAMES)

    def spawn(self, answer: Coroutine[Any, Any, None]) -> None:
        """After `await self.slots.acquire()`."""
        task = asyncio.create_task(answer)
        self.in_flight.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.in_flight.discard(task)
        self.slots.release()

    async def drain(self) -> None:
        if self.in_flight:
            await asyncio.gather(*self.in_flight)


async def _serve_frames(
    websocket: WebSocket, state: GatewayState, handle: Handle, pipelined: frozenset[str]
) -> None:
    """Frames of the `pipelined` types are handled concurrently (up to MAX_PIPELINED_FRAMES):
    a client streaming submissions is not held to one store round trip per frame, and the
    store commits them in larger batches. Any other frame first waits for those in flight, so
    a `ping` answered means every frame sent before it was handled."""
    pipeline: _Pipeline | None = None
    try:
        async for frame in _frames(websocket, state.settings.max_frame_bytes):
            if frame["type"] in pipelined:
                if pipeline is None:
                    pipeline = _Pipeline()
                await pipeline.slots.acquire()
                pipeline.spawn(_answer(websocket, handle, frame))
                continue
            if pipeline is not None:
                await pipeline.drain()
            await _answer(websocket, handle, frame)
    finally:
        # A client that leaves does not take its accepted frames with it.
        if pipeline is not None:
            await pipeline.drain()


# --- applications -------------------------------------------------------------------------


async def application_socket(websocket: WebSocket, app_id: str, state: GatewayState) -> None:
    bind_log_fields(app_id=app_id)
    identity, refusal = await state.auth.admit(websocket, "app", app_id)
    if not await _open(websocket, app_id, "application", state.settings.max_frame_bytes, refusal):
        return

    async def handle(frame: dict[str, Any]) -> str | None:
        kind = frame["type"]
        if kind == PING:
            return PONG_FRAME
        if kind == PROCESSING_TASK:
            return await _submit(state, app_id, identity, frame)
        if kind == CANCEL_TASK:
            return await _cancel(state, app_id, frame)
        raise FrameError(ERR_UNKNOWN_TYPE, f"unknown message type {kind!r}")

    unwatch = _watch(state, identity, websocket)
    try:
        await state.registry.attach_app(app_id, websocket)
        state.presence.apps_changed()
        await _serve_frames(websocket, state, handle, frozenset({PROCESSING_TASK}))
    except TRANSIENT_ERRORS as exc:
        await _close_try_again_later(websocket, exc)
    finally:
        unwatch()
        await state.registry.detach_app(app_id, websocket)
        state.presence.apps_changed()


async def _submit(
    state: GatewayState, app_id: str, identity: Identity | None, frame: dict[str, Any]
) -> str | None:
    request = _validate(TaskRequest, frame.get("data"), PROCESSING_TASK)
    if request.app_id is not None and request.app_id != app_id:
        raise FrameError(ERR_ID_MISMATCH, "data.app_id must match the application id of the path")
    try:
        check_submit(identity, app_id, request.drone_id)
    except Forbidden as exc:
        raise FrameError(ERR_FORBIDDEN, str(exc)) from None
    try:
        outcome = await state.tasks.submit(app_id, request)
    except LimitExceeded as exc:
        raise _limit_frame(exc) from None
    request_id = frame.get("request_id")
    if request_id is None:
        return None  # spec clients expect the next frame to be their result
    return encode(
        {
            "type": TASK_CREATED,
            "request_id": request_id,
            "task_id": outcome.task.task_id,
            "created": outcome.created,
        }
    ).decode()


def _limit_frame(exc: LimitExceeded) -> FrameError:
    extra: dict[str, JsonValue] = {"message_type": PROCESSING_TASK}
    if exc.retry_after_s is not None:
        extra["retry_after"] = exc.retry_after_s
    return FrameError(exc.code, exc.message, **extra)


async def _cancel(state: GatewayState, app_id: str, frame: dict[str, Any]) -> str | None:
    request = _validate(CancelTask, frame.get("data", frame), CANCEL_TASK)
    task = await state.store.get_task(request.task_id)
    if task is None or task.app_id != app_id:
        raise FrameError(ERR_UNKNOWN_TASK, f"no task {request.task_id!r} of this application")
    try:
        await state.tasks.cancel(request.task_id)
    except TaskNotFound:
        raise FrameError(ERR_UNKNOWN_TASK, f"no task {request.task_id!r}") from None
    except TaskAlreadyFinished:
        raise FrameError(
            ERR_ALREADY_FINISHED, "the task already finished", task_id=request.task_id
        ) from None
    # The status update with `cancelled` reaches the app through its notification queue.
    return encode(
        {"type": TASK_CANCELLED, "task_id": request.task_id, "request_id": request_id_of(frame)}
    ).decode()


# --- drones -------------------------------------------------------------------------------


async def drone_socket(websocket: WebSocket, drone_id: str, state: GatewayState) -> None:
    bind_log_fields(drone_id=drone_id)
    capacity = _capacity(websocket, state)
    identity, refusal = await state.auth.admit(websocket, "drone", drone_id)
    if capacity is None:
        limit = state.settings.max_drone_capacity
        refusal = Refusal(f"capacity must be an integer from 1 to {limit}")
    opened = await _open(websocket, drone_id, "drone", state.settings.max_frame_bytes, refusal)
    if not opened or capacity is None:
        return
    session = state.drones.session(drone_id, websocket, capacity)
    ticket = state.presence.drone_joined(session)

    async def handle(frame: dict[str, Any]) -> str | None:
        ticket.last_seen = time()
        kind = frame["type"]
        if kind == PING:
            return PONG_FRAME
        if kind == PROCESSING_RESULT:
            result = _validate(DroneResult, frame.get("data"), PROCESSING_RESULT)
            await state.drones.report_result(session, result)
            return None
        if kind == TASK_STATUS_UPDATE:
            update = _validate(DroneStatusUpdate, frame.get("data"), TASK_STATUS_UPDATE)
            await state.drones.report_status(session, update)
            return None
        raise FrameError(ERR_UNKNOWN_TYPE, f"unknown message type {kind!r}")

    unwatch = _watch(state, identity, websocket)
    try:
        await state.registry.attach_drone(session)
        await _serve_frames(
            websocket, state, handle, frozenset({PROCESSING_RESULT, TASK_STATUS_UPDATE})
        )
    except TRANSIENT_ERRORS as exc:
        await _close_try_again_later(websocket, exc)
    finally:
        unwatch()
        await state.registry.detach_drone(session)
        state.presence.drone_left(ticket)


def _watch(
    state: GatewayState, identity: Identity | None, websocket: WebSocket
) -> Callable[[], None]:
    """Close the socket when its token expires or is revoked; returns what stops watching."""
    if identity is None:
        return lambda: None
    return state.auth.live.watch(identity, websocket)


async def _close_try_again_later(websocket: WebSocket, exc: Exception) -> None:
    """The broker or the store is unreachable while setting the connection up."""
    log.warning("closing a socket until the backend is back: %s", exc)
    with contextlib.suppress(RuntimeError):
        await websocket.close(CLOSE_TRY_AGAIN_LATER, "backend unavailable, reconnect later")


def _capacity(websocket: WebSocket, state: GatewayState) -> int | None:
    raw = websocket.query_params.get("capacity", "1")
    # str.isdigit also admits digits int() refuses, such as '²'.
    if not (raw.isascii() and raw.isdigit()):
        return None
    capacity = int(raw)
    return capacity if 1 <= capacity <= state.settings.max_drone_capacity else None


# --- routing --------------------------------------------------------------------------------

Endpoint = Callable[[WebSocket, str, GatewayState], Awaitable[None]]
ENDPOINTS: tuple[tuple[str, Endpoint], ...] = (
    ("/ws/drone/", drone_socket),
    ("/ws/application/", application_socket),
)


class SocketRoutes:
    """/ws/drone/{id} and /ws/application/{id}, matched as Starlette would match those paths
    (one non-empty segment); everything else goes on to the app's routes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            path = get_route_path(scope)
            for prefix, endpoint in ENDPOINTS:
                if path.startswith(prefix):
                    client_id = path[len(prefix) :]
                    if client_id and "/" not in client_id:
                        state: GatewayState = scope["app"].state.gateway
                        await endpoint(WebSocket(scope, receive, send), client_id, state)
                        return
        await self.app(scope, receive, send)
