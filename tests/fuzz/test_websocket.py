"""Property-based fuzzing of both socket kinds against a real server: whatever a client sends,
the server never crashes or errs, never closes the socket in an undocumented way, answers every
frame it cannot use with an `error` frame, and keeps serving another client normally."""

import json
from collections.abc import Iterator
from typing import Any, Final

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from websockets.sync.client import ClientConnection, connect

from shared.protocol import CancelTask, DroneResult, DroneStatusUpdate, TaskRequest
from tests.e2e.clients import task_body
from tests.fuzz.conftest import FUZZ_EXAMPLES, server_errors_logged
from tests.processes import ServiceProcess

REPLY_TIMEOUT_S: Final = 10.0
NO_KEEPALIVE: Final = {"ping_interval": None}
"""The keepalive thread draws from `random`, which Hypothesis reports when it happens during a
draw: a fuzzing run is short enough without it."""
APP_FRAMES: Final[dict[str, type[BaseModel] | None]] = {
    "ping": None,
    "processing_task": TaskRequest,
    "cancel_task": CancelTask,
}
DRONE_FRAMES: Final[dict[str, type[BaseModel] | None]] = {
    "ping": None,
    "processing_result": DroneResult,
    "task_status_update": DroneStatusUpdate,
}
FIELD_NAMES: Final = [
    "task_id", "drone_id", "app_id", "task_type", "input_data", "priority", "status",
    "success", "result_data", "additional_data", "processing_time", "error_message",
    "timestamp", "timeout_s", "ttl_s", "max_attempts", "idempotency_key", "request_id",
]  # fmt: skip

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["processing", "completed", "Drone001", "App001", "task_x", ""]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=12,
)


def frames(kinds: dict[str, type[BaseModel] | None]) -> st.SearchStrategy[str | bytes]:
    typed = st.fixed_dictionaries(
        {"type": st.sampled_from([*kinds, "nope", ""]) | st.text(max_size=12)},
        optional={
            "data": json_values
            | st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=8),
            "request_id": json_values,
        },
    )
    return (
        typed.map(lambda frame: json.dumps(frame, allow_nan=True))
        | json_values.map(lambda value: json.dumps(value, allow_nan=True))
        | st.text(max_size=60)
        | st.binary(max_size=60)
    )


def usable(raw: str | bytes, kinds: dict[str, type[BaseModel] | None]) -> bool:
    """Whether the server can act on the frame; if not, it owes an `error` frame."""
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    # A type that is a list or an object is unusable too, and unhashable: test it first.
    kind = frame.get("type") if isinstance(frame, dict) else None
    if not isinstance(kind, str) or kind not in kinds:
        return False
    model = kinds[frame["type"]]
    if model is None:
        return True
    data = frame.get("data")
    if frame["type"] == "cancel_task" and data is None:
        data = frame
    try:
        model.model_validate(data)
    except ValidationError:
        return False
    return True


def is_ping(raw: str | bytes) -> bool:
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return isinstance(frame, dict) and frame.get("type") == "ping"


def replies_until_pong(socket: ClientConnection, pongs: int = 1) -> list[dict[str, Any]]:
    """Every frame the server sent before the pong to our ping: frames are answered in order,
    so these are the answers to what we sent before it (a fuzzed ping has a pong of its own)."""
    socket.send('{"type": "ping"}')
    replies = []
    while pongs:
        reply = json.loads(socket.recv(timeout=REPLY_TIMEOUT_S))
        if reply["type"] == "pong":
            pongs -= 1
        else:
            replies.append(reply)
    return replies


@pytest.fixture(scope="module")
def bystander(fuzzed_server: ServiceProcess) -> Iterator[ClientConnection]:
    """Another application, served normally throughout."""
    with connect(f"{fuzzed_server.ws_url}/ws/application/Bystander", **NO_KEEPALIVE) as socket:
        assert json.loads(socket.recv(timeout=REPLY_TIMEOUT_S))["type"] == "connection_established"
        yield socket


def fuzz(server: ServiceProcess, path: str, kinds: dict[str, type[BaseModel] | None]) -> None:
    with connect(f"{server.ws_url}{path}", max_size=None, **NO_KEEPALIVE) as socket:
        assert json.loads(socket.recv(timeout=REPLY_TIMEOUT_S))["type"] == "connection_established"

        @given(raw=frames(kinds))
        @settings(
            max_examples=FUZZ_EXAMPLES * 5, deadline=None, suppress_health_check=list(HealthCheck)
        )
        def answered(raw: str | bytes) -> None:
            socket.send(raw)
            replies = replies_until_pong(socket, pongs=2 if is_ping(raw) else 1)
            if not usable(raw, kinds):
                assert any(reply["type"] == "error" for reply in replies), (raw, replies)
            for reply in replies:
                if reply["type"] == "error":
                    assert isinstance(reply["code"], str) and reply["message"], reply

        answered()


def test_application_socket_survives_any_frame(
    fuzzed_server: ServiceProcess, bystander: ClientConnection
) -> None:
    fuzz(fuzzed_server, "/ws/application/FuzzApp", APP_FRAMES)
    assert replies_until_pong(bystander) == []
    assert server_errors_logged(fuzzed_server) == []


def test_drone_socket_survives_any_frame(
    fuzzed_server: ServiceProcess, bystander: ClientConnection
) -> None:
    fuzz(fuzzed_server, "/ws/drone/FuzzDrone", DRONE_FRAMES)
    assert replies_until_pong(bystander) == []
    assert server_errors_logged(fuzzed_server) == []


def test_bystander_task_completes_after_the_fuzzing(
    fuzzed_server: ServiceProcess, bystander: ClientConnection
) -> None:
    # Given the server that took every fuzzed frame above
    with connect(f"{fuzzed_server.ws_url}/ws/drone/BystanderDrone", **NO_KEEPALIVE) as drone:
        drone.recv(timeout=REPLY_TIMEOUT_S)
        # When the bystander sends a task to a drone
        body = task_body("Bystander", "BystanderDrone")
        bystander.send(json.dumps({"type": "processing_task", "request_id": 1, "data": body}))
        task = json.loads(drone.recv(timeout=REPLY_TIMEOUT_S))
        assert task["type"] == "processing_task"
        result = {"task_id": task["task_id"], "success": True, "result_data": {"ok": 1}}
        drone.send(json.dumps({"type": "processing_result", "data": result}))
    # Then its result arrives as usual
    while (reply := json.loads(bystander.recv(timeout=REPLY_TIMEOUT_S)))["type"] != (
        "processing_result_received"
    ):
        pass
    assert reply["task_id"] == task["task_id"]
