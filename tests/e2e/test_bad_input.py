"""Bad input gets a clear 4xx or an `error` frame: never a 500, a crash or a dropped socket."""

import httpx
import pytest

from tests.e2e.clients import WsClient, task_body
from tests.e2e.conftest import Server

VALID = task_body("App001", "Drone001")


def _without(field: str) -> dict[str, object]:
    body = dict(VALID)
    del body[field]
    return body


@pytest.mark.parametrize(
    ("case", "content"),
    [
        ("json that does not parse", b'{"app_id": "App001",'),
        ("a body that is a list", b"[1, 2, 3]"),
        ("a body that is a string", b'"hello"'),
        ("an empty body", b""),
    ],
)
async def test_rest_unparseable_or_non_object_body_is_422(
    http: httpx.AsyncClient, case: str, content: bytes
) -> None:
    response = await http.post(
        "/api/processing-tasks", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, case
    assert "detail" in response.json()


@pytest.mark.parametrize("field", ["app_id", "drone_id", "task_type", "input_data"])
async def test_rest_missing_field_is_422_naming_it(http: httpx.AsyncClient, field: str) -> None:
    response = await http.post("/api/processing-tasks", json=_without(field))
    assert response.status_code == 422
    assert any(field in err["loc"] for err in response.json()["detail"])


@pytest.mark.parametrize("priority", [0, 6, -1, 2.5, "3", None, True])
async def test_rest_priority_outside_1_to_5_or_not_an_integer_is_422(
    http: httpx.AsyncClient, priority: object
) -> None:
    response = await http.post("/api/processing-tasks", json={**VALID, "priority": priority})
    assert response.status_code == 422
    assert any("priority" in err["loc"] for err in response.json()["detail"])


@pytest.mark.parametrize("input_data", [[1, 2], "text", 5, None])
async def test_rest_input_data_not_an_object_is_422(
    http: httpx.AsyncClient, input_data: object
) -> None:
    response = await http.post("/api/processing-tasks", json={**VALID, "input_data": input_data})
    assert response.status_code == 422
    assert any("input_data" in err["loc"] for err in response.json()["detail"])


@pytest.mark.parametrize("field", ["app_id", "drone_id"])
@pytest.mark.parametrize("bad_id", ["has space", "a/b", "", "x" * 65, "drone.1", "ünïcode"])
async def test_rest_ids_outside_the_safe_alphabet_are_422(
    http: httpx.AsyncClient, field: str, bad_id: str
) -> None:
    response = await http.post("/api/processing-tasks", json={**VALID, field: bad_id})
    assert response.status_code == 422
    assert any(field in err["loc"] for err in response.json()["detail"])


async def test_rest_body_over_the_limit_is_413(http: httpx.AsyncClient, server: Server) -> None:
    big = {**VALID, "input_data": {"blob": "x" * (server.settings.max_body_bytes + 10)}}
    response = await http.post("/api/processing-tasks", json=big)
    assert response.status_code == 413


async def test_rest_chunked_body_over_the_limit_is_413(
    http: httpx.AsyncClient, server: Server
) -> None:
    chunk = b"x" * 65536
    count = server.settings.max_body_bytes // len(chunk) + 2

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(count):
            yield chunk

    response = await http.post(
        "/api/processing-tasks", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


async def test_rest_bad_limits_are_422(http: httpx.AsyncClient) -> None:
    for path in (
        "/api/processing-tasks/drone/D1/pending?limit=0",
        "/api/processing-tasks/drone/D1/pending?limit=abc",
        "/api/processing-results/drone/D1?limit=-5",
        "/api/processing-tasks/drone/bad%20id/pending",
    ):
        assert (await http.get(path)).status_code == 422, path


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_message"),
        ('{"no_type": 1}', "invalid_message"),
        ('{"type": "launch_missiles"}', "unknown_type"),
        ('{"type": "processing_task"}', "invalid_message"),
        ('{"type": "processing_task", "data": {"drone_id": "D1"}}', "invalid_message"),
        (
            '{"type": "processing_task", "data": {"drone_id": "D1", "task_type": "t",'
            ' "input_data": {}, "priority": 9}}',
            "invalid_message",
        ),
        ('{"type": "cancel_task", "data": {"task_id": "task_nope"}}', "unknown_task"),
    ],
)
async def test_app_socket_answers_bad_frames_with_error_and_stays_open(
    server: Server, frame: str, code: str
) -> None:
    async with WsClient(server.app_ws("App001")) as app:
        await app.send(frame)
        error = await app.wait_type("error")
        await app.roundtrip_ping()
    assert error["code"] == code
    assert error["message"]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ('{"request_id": "r-1", "type": "processing_task", "data": {', "invalid_json"),
        ('{"request_id": "r-1", "type": 7}', "invalid_message"),
        ('{"request_id": "r-1", "type": "processing_task", "data": {}}', "invalid_message"),
        (
            '{"type": "processing_task", "request_id": "r-1", "data": {"drone_id": "D1",'
            ' "task_type": "t", "input_data": {}, "priority": 9}}',
            "invalid_message",
        ),
        (
            '{"type": "cancel_task", "request_id": "r-1", "data": {"task_id": "nope"}}',
            "unknown_task",
        ),
        (
            '{"type": "cancel_task", "data": {"task_id": "nope", "request_id": "r-1"}}',
            "unknown_task",
        ),
        ('{"type": "warp", "request_id": "r-1"}', "unknown_type"),
    ],
)
async def test_app_socket_error_echoes_the_request_id_of_the_frame(
    server: Server, frame: str, code: str
) -> None:
    # A client multiplexing requests on one socket fails the one refused, without a timeout
    async with WsClient(server.app_ws("App001")) as app:
        await app.send(frame)
        error = await app.wait_type("error")
    assert (error["code"], error.get("request_id")) == (code, "r-1")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "invalid_json"),
        ('{"type": "fly_away"}', "unknown_type"),
        ('{"type": "processing_result", "data": {"task_id": "task_x"}}', "invalid_message"),
        ('{"type": "processing_result", "data": "nope"}', "invalid_message"),
        (
            '{"type": "processing_result", "data": {"task_id": "task_unknown", "success": true}}',
            "unknown_task",
        ),
        (
            '{"type": "task_status_update",'
            ' "data": {"task_id": "task_unknown", "status": "processing"}}',
            "unknown_task",
        ),
    ],
)
async def test_drone_socket_answers_bad_frames_with_error_and_stays_open(
    server: Server, frame: str, code: str
) -> None:
    async with WsClient(server.drone_ws("Drone001")) as drone:
        await drone.send(frame)
        error = await drone.wait_type("error")
        await drone.roundtrip_ping()
    assert error["code"] == code


@pytest.mark.parametrize(
    "path", ["/ws/application/bad.id", "/ws/drone/has%20space", "/ws/drone/" + "x" * 65]
)
async def test_invalid_id_in_the_path_closes_with_1008_before_the_welcome(
    server: Server, path: str
) -> None:
    async with WsClient(server.ws_url + path) as client:
        assert await client.wait_closed() == 1008
    assert client.received == []


async def test_welcome_names_the_frame_limit(server: Server) -> None:
    async with WsClient(server.app_ws("App001")) as app:
        welcome = await app.wait_type("connection_established")
    assert welcome["max_frame_bytes"] == server.settings.max_frame_bytes


async def test_frame_over_the_limit_closes_with_1009(server: Server) -> None:
    async with WsClient(server.drone_ws("BigDrone")) as drone:
        await drone.wait_type("connection_established")
        await drone.send("x" * (server.settings.max_frame_bytes + 1))
        assert await drone.wait_closed() == 1009


async def test_binary_frames_are_read_like_text(server: Server) -> None:
    async with WsClient(server.app_ws("App001")) as app:
        await app.send(b'{"type": "ping"}')
        await app.wait_type("pong")
