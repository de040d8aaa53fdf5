"""The documented flow end to end on a real server: REST, both sockets, results, status."""

import re

import httpx

from tests.e2e.clients import WsClient, result_message, task_body
from tests.e2e.conftest import Server

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


async def test_rest_create_answers_200_with_a_task_id_and_the_spec_message(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post("/api/processing-tasks", json=task_body("App001", "Drone001"))

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"task_id", "message"}
    assert body["message"] == "Processing task created successfully"
    assert re.fullmatch(r"task_[0-9a-f]{12,}", body["task_id"])


async def test_rest_task_ids_are_unique(http: httpx.AsyncClient) -> None:
    ids = {
        (await http.post("/api/processing-tasks", json=task_body("App1", "D1"))).json()["task_id"]
        for _ in range(50)
    }
    assert len(ids) == 50


async def test_rest_get_task_has_the_spec_fields(http: httpx.AsyncClient) -> None:
    body = task_body("App001", "Drone001", priority=4)
    task_id = (await http.post("/api/processing-tasks", json=body)).json()["task_id"]

    task = (await http.get(f"/api/processing-tasks/{task_id}")).json()

    for field in ("app_id", "drone_id", "task_type", "input_data", "priority"):
        assert task[field] == body[field]
    assert task["task_id"] == task_id
    assert task["status"] == "pending"
    assert ISO_UTC.match(task["created_at"]) and ISO_UTC.match(task["updated_at"])
    assert "delivery" not in task and "notified_at" not in task


async def test_rest_priority_defaults_to_normal(http: httpx.AsyncClient) -> None:
    body = task_body("App1", "D1")
    del body["priority"]
    task_id = (await http.post("/api/processing-tasks", json=body)).json()["task_id"]

    assert (await http.get(f"/api/processing-tasks/{task_id}")).json()["priority"] == 2


async def test_rest_unknown_ids_get_404_with_detail(http: httpx.AsyncClient) -> None:
    for path in ("/api/processing-tasks/task_000000000000", "/api/processing-results/task_0000"):
        response = await http.get(path)
        assert response.status_code == 404
        assert "detail" in response.json()


async def test_rest_limit_applies_to_both_list_endpoints(
    server: Server, http: httpx.AsyncClient
) -> None:
    async with WsClient(server.app_ws("LimitApp")) as app:
        for _ in range(5):
            await http.post("/api/processing-tasks", json=task_body("LimitApp", "LimitDrone"))
        pending = (await http.get("/api/processing-tasks/drone/LimitDrone/pending?limit=3")).json()
        assert pending["count"] == 3 and len(pending["tasks"]) == 3
        assert pending["drone_id"] == "LimitDrone"

        async with WsClient(server.drone_ws("LimitDrone", capacity=5)) as drone:
            await drone.wait_for(lambda _: len(drone.of_type("processing_task")) == 5)
            for frame in drone.of_type("processing_task"):
                await drone.send(result_message(frame["task_id"], "LimitDrone"))
            await app.wait_for(lambda _: len(app.of_type("processing_result_received")) == 5)

    everything = (await http.get("/api/processing-results/drone/LimitDrone")).json()
    limited = (await http.get("/api/processing-results/drone/LimitDrone?limit=2")).json()
    assert everything["count"] == 5
    assert limited["count"] == 2 and len(limited["results"]) == 2
    assert limited["drone_id"] == "LimitDrone"


async def test_ws_welcome_frames_then_ping_pong(server: Server) -> None:
    async with (
        WsClient(server.app_ws("App001")) as app,
        WsClient(server.drone_ws("Drone001")) as drone,
    ):
        for client, client_id, client_type in (
            (app, "App001", "application"),
            (drone, "Drone001", "drone"),
        ):
            welcome = await client.wait_type("connection_established")
            assert client.received[0] is welcome
            assert welcome["client_id"] == client_id
            assert welcome["client_type"] == client_type
            assert ISO_UTC.match(welcome["timestamp"])
            await client.send({"type": "ping"})
            await client.wait_type("pong")


async def test_flow_rest_task_created_before_its_drone_connects_reaches_it_on_connect(
    server: Server, http: httpx.AsyncClient
) -> None:
    # Given a task for a drone that is offline
    body = task_body("App001", "LateDrone")
    task_id = (await http.post("/api/processing-tasks", json=body)).json()["task_id"]

    # When the drone connects
    async with WsClient(server.drone_ws("LateDrone")) as drone:
        frame = await drone.wait_type("processing_task")

    # Then it receives the task in the spec's shape
    assert frame["task_id"] == task_id
    assert frame["task_data"] == {
        "app_id": "App001",
        "drone_id": "LateDrone",
        "task_type": body["task_type"],
        "input_data": body["input_data"],
        "priority": body["priority"],
    }
    assert ISO_UTC.match(frame["timestamp"])


async def test_flow_full_cycle_over_websockets(server: Server, http: httpx.AsyncClient) -> None:
    async with (
        WsClient(server.app_ws("App001")) as app,
        WsClient(server.drone_ws("Drone001")) as drone,
    ):
        await drone.wait_type("connection_established")
        # Given an application that submits over its socket, as in the spec's step 3
        await app.send(
            {
                "type": "processing_task",
                "data": {
                    "app_id": "App001",
                    "drone_id": "Drone001",
                    "task_type": "object_detection",
                    "input_data": {"image_data": "aGVsbG8="},
                    "priority": 2,
                },
            }
        )
        # When the drone receives it, reports progress and returns a result
        task = await drone.wait_type("processing_task")
        task_id = task["task_id"]
        await drone.send(
            {
                "type": "task_status_update",
                "data": {
                    "task_id": task_id,
                    "status": "processing",
                    "additional_data": {"progress": 50},
                },
            }
        )
        update = await app.wait_type("task_status_update", task_id=task_id)
        assert (await http.get(f"/api/processing-tasks/{task_id}")).json()["status"] == "processing"
        result_data = {
            "detections": [{"class": "person", "confidence": 0.92, "bbox": [50, 100, 200, 400]}]
        }
        await drone.send(result_message(task_id, "Drone001", result_data=result_data))
        received = await app.wait_type("processing_result_received", task_id=task_id)

    # Then the application saw the status update and the result, in the spec's shapes
    assert update["status"] == "processing"
    assert update["drone_id"] == "Drone001"
    assert update["additional_data"] == {"progress": 50}
    assert ISO_UTC.match(update["timestamp"])
    assert received["result_data"] == result_data
    assert received["drone_id"] == "Drone001" and received["app_id"] == "App001"
    assert received["success"] is True and received["processing_time"] == 0.85
    assert received["error_message"] is None
    assert re.fullmatch(r"[0-9a-f]{24}", received["result_id"])
    assert received["timestamp"] == "2024-01-01T12:00:00.000Z"
    # And the first frame after the welcome was the status update: no extra reply to the submit
    assert [f["type"] for f in app.received[:3]] == [
        "connection_established",
        "task_status_update",
        "processing_result_received",
    ]
    # And REST shows the stored result and the completed task
    stored = (await http.get(f"/api/processing-results/{task_id}")).json()
    assert stored["result_data"] == result_data and stored["success"] is True
    assert stored["processing_time"] == 0.85 and stored["drone_id"] == "Drone001"
    task_view = (await http.get(f"/api/processing-tasks/{task_id}")).json()
    assert task_view["status"] == "completed"
    assert task_view["finished_at"] is not None


async def test_flow_failed_result_fails_the_task_with_the_error(
    server: Server, http: httpx.AsyncClient
) -> None:
    async with (
        WsClient(server.app_ws("App001")) as app,
        WsClient(server.drone_ws("Drone001")) as drone,
    ):
        task_id = (
            await http.post("/api/processing-tasks", json=task_body("App001", "Drone001"))
        ).json()["task_id"]
        await drone.wait_type("processing_task", task_id=task_id)
        await drone.send(
            result_message(
                task_id,
                "Drone001",
                result_data={},
                success=False,
                error_message="Image processing failed: Invalid image format",
            )
        )
        received = await app.wait_type("processing_result_received", task_id=task_id)

    assert received["success"] is False
    assert received["error_message"] == "Image processing failed: Invalid image format"
    task = (await http.get(f"/api/processing-tasks/{task_id}")).json()
    assert task["status"] == "failed"
    assert task["error_code"] == "drone_error"
    assert task["error_message"] == "Image processing failed: Invalid image format"


async def test_ws_submit_with_request_id_gets_task_created(
    server: Server, http: httpx.AsyncClient
) -> None:
    async with WsClient(server.app_ws("App001")) as app:
        await app.send(
            {
                "type": "processing_task",
                "request_id": "r-1",
                "data": task_body("App001", "Drone9"),
            }
        )
        created = await app.wait_type("task_created")

    assert created["request_id"] == "r-1"
    task = (await http.get(f"/api/processing-tasks/{created['task_id']}")).json()
    assert task["app_id"] == "App001" and task["drone_id"] == "Drone9"


async def test_ws_submit_without_app_id_takes_the_path_identity(
    server: Server, http: httpx.AsyncClient
) -> None:
    async with WsClient(server.app_ws("PathApp")) as app:
        body = task_body("ignored", "Drone9")
        del body["app_id"]
        await app.send({"type": "processing_task", "request_id": 7, "data": body})
        created = await app.wait_type("task_created")

    task = (await http.get(f"/api/processing-tasks/{created['task_id']}")).json()
    assert task["app_id"] == "PathApp"


async def test_ws_submit_with_another_app_id_is_an_error_and_creates_nothing(
    server: Server, http: httpx.AsyncClient
) -> None:
    async with WsClient(server.app_ws("App001")) as app:
        await app.send({"type": "processing_task", "data": task_body("App002", "MismatchDrone")})
        error = await app.wait_type("error")
        await app.roundtrip_ping()  # the socket stays open

    assert error["code"] == "id_mismatch"
    pending = (await http.get("/api/processing-tasks/drone/MismatchDrone/pending")).json()
    assert pending["count"] == 0
