"""Values JSON or a store cannot hold, and handshakes too large to parse, get a clear 4xx or an
`error` frame: each case here was a 500 (or a handshake left unanswered) before."""

import json

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from shared.storable import INT64_MAX, INT64_MIN, MAX_DOCUMENT_DEPTH
from tests.e2e.clients import WsClient, task_body
from tests.e2e.conftest import Server

HANDSHAKE_WAIT_S = 10.0


def _nested(depth: int) -> dict[str, object]:
    """An input_data object whose objects and arrays nest `depth` levels, itself included."""
    value: object = []
    for _ in range(depth - 2):
        value = [value]
    return {"x": value}


def _raw_task(input_data_json: str, **overrides: str) -> bytes:
    fields = {
        "app_id": '"App001"',
        "drone_id": '"Drone001"',
        "task_type": '"t"',
        "input_data": input_data_json,
        **overrides,
    }
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}").encode()


@pytest.mark.parametrize(
    ("case", "body"),
    [
        ("NaN in input_data", _raw_task('{"x": NaN}')),
        ("Infinity in input_data", _raw_task('{"x": Infinity}')),
        ("-Infinity in input_data", _raw_task('{"x": -Infinity}')),
        ("NaN as timeout_s", _raw_task("{}", timeout_s="NaN")),
        ("a lone surrogate in input_data", _raw_task('{"x": "\\ud800"}')),
        ("a lone surrogate as task_type", _raw_task("{}", task_type='"\\udfff"')),
        ("an integer above int64", _raw_task(f'{{"x": {INT64_MAX + 1}}}')),
        ("the largest uint64", _raw_task(f'{{"x": {2**64 - 1}}}')),
        ("nesting past the limit", _raw_task(json.dumps(_nested(MAX_DOCUMENT_DEPTH + 1)))),
        ("nesting at the recursion limit", _raw_task('{"x": ' + "[" * 990 + "]" * 990 + "}")),
    ],
)
async def test_rest_values_no_store_can_keep_are_422(
    http: httpx.AsyncClient, case: str, body: bytes
) -> None:
    response = await http.post(
        "/api/processing-tasks", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, case
    assert response.json()["detail"], case
    assert (await http.post("/api/processing-tasks", json=task_body("App001", "D1"))).is_success


async def test_rest_values_at_the_limits_are_stored_and_read_back_unchanged(
    http: httpx.AsyncClient,
) -> None:
    input_data = {"max": INT64_MAX, "min": INT64_MIN, "deep": _nested(MAX_DOCUMENT_DEPTH - 1)}
    created = await http.post(
        "/api/processing-tasks", json=task_body("App001", "Drone001", input_data=input_data)
    )
    assert created.status_code == 200
    task = await http.get(f"/api/processing-tasks/{created.json()['task_id']}")
    assert task.json()["input_data"] == input_data


async def test_app_socket_answers_an_unstorable_task_with_an_error_frame(server: Server) -> None:
    async with WsClient(server.app_ws("App001")) as app:
        await app.send(
            {
                "type": "processing_task",
                "data": task_body("App001", "Drone001", input_data={"x": INT64_MAX + 1}),
            }
        )
        error = await app.wait_type("error")
        await app.roundtrip_ping()
    assert error["code"] == "invalid_message"


async def test_drone_socket_answers_an_unstorable_result_with_an_error_frame(
    server: Server,
) -> None:
    result = {"task_id": "task_x", "success": True, "result_data": _nested(MAX_DOCUMENT_DEPTH + 1)}
    async with WsClient(server.drone_ws("Drone001")) as drone:
        await drone.send({"type": "processing_result", "data": result})
        error = await drone.wait_type("error")
        await drone.roundtrip_ping()
    assert error["code"] == "invalid_message"


@pytest.mark.parametrize("path_bytes", [9_000, 20_000, 70_000])
async def test_socket_path_too_long_to_parse_is_answered_414(
    server: Server, path_bytes: int
) -> None:
    url = server.drone_ws("x" * path_bytes)
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(url, open_timeout=HANDSHAKE_WAIT_S)
    assert refused.value.response.status_code == 414


@pytest.mark.parametrize(
    "updated_since", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"]
)
async def test_listing_since_a_moment_outside_utc_years_is_422(
    http: httpx.AsyncClient, updated_since: str
) -> None:
    response = await http.get("/api/processing-tasks", params={"updated_since": updated_since})
    assert response.status_code == 422


async def test_result_timestamp_outside_utc_years_is_an_error_frame(server: Server) -> None:
    async with WsClient(server.app_ws("App001")) as app:
        await app.send(
            {"type": "processing_task", "request_id": 1, "data": task_body("App001", "D7")}
        )
        task_id = (await app.wait_type("task_created"))["task_id"]
        async with WsClient(server.drone_ws("D7")) as drone:
            await drone.wait_type("processing_task", task_id=task_id)
            result = {"task_id": task_id, "success": True, "timestamp": "9999-12-31T23:59:59-14:00"}
            await drone.send({"type": "processing_result", "data": result})
            error = await drone.wait_type("error")
            await drone.roundtrip_ping()
    assert error["code"] == "invalid_message"


@pytest.mark.parametrize("capacity", ["²", "①"])
async def test_capacity_in_unicode_digits_int_refuses_closes_with_1008(
    server: Server, capacity: str
) -> None:
    async with WsClient(server.drone_ws("Drone001") + f"?capacity={capacity}") as drone:
        assert await drone.wait_closed() == 1008
    assert drone.received == []
