"""Drone sessions on flaky links: a drone that comes back gets the tasks it held again, as the
same deliveries (`resumed: true`, same `attempt`); only an in-progress timeout costs an attempt."""

from typing import Any

import httpx

from tests.e2e.clients import WsClient, result_message, task_body
from tests.e2e.conftest import Server


async def _create(http: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await http.post("/api/processing-tasks", json=body)
    assert response.status_code == 200, response.text
    task_id: str = response.json()["task_id"]
    return task_id


async def _task(http: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    task: dict[str, Any] = (await http.get(f"/api/processing-tasks/{task_id}")).json()
    return task


async def test_session_reconnected_drone_gets_its_held_task_resumed_with_the_same_attempt(
    server: Server, http: httpx.AsyncClient
) -> None:
    # Given a drone that received a task, then lost its link
    task_id = await _create(http, task_body("ResumeApp", "ResumeDrone"))
    async with WsClient(server.drone_ws("ResumeDrone")) as drone:
        first = await drone.wait_type("processing_task", task_id=task_id)

    # When it connects again
    async with (
        WsClient(server.app_ws("ResumeApp")) as app,
        WsClient(server.drone_ws("ResumeDrone")) as drone,
    ):
        again = await drone.wait_type("processing_task", task_id=task_id)
        await drone.send(result_message(task_id, "ResumeDrone"))
        await app.wait_type("processing_result_received", task_id=task_id)

    # Then it was sent the same delivery again, and finished it on its first attempt
    assert first["attempt"] == 1 and "resumed" not in first
    assert again["attempt"] == 1 and again["resumed"] is True
    assert again["task_data"] == first["task_data"]
    task = await _task(http, task_id)
    assert (task["status"], task["attempts"]) == ("completed", 1)
    assert not [f for f in app.of_type("task_status_update") if f["status"] == "failed"]


async def test_session_quick_reconnects_beyond_max_attempts_cost_no_attempt(
    server: Server, http: httpx.AsyncClient
) -> None:
    # Given a task that may be tried twice
    task_id = await _create(http, task_body("FlapApp", "FlapDrone", max_attempts=2))

    # When its drone connects and drops five times, some before the task could even arrive
    for cycle in range(5):
        async with WsClient(server.drone_ws("FlapDrone")) as drone:
            if cycle % 2:
                await drone.wait_type("connection_established")
            else:
                await drone.wait_type("processing_task", task_id=task_id)

    # Then the task is still the drone's, delivered once, and completes
    async with (
        WsClient(server.app_ws("FlapApp")) as app,
        WsClient(server.drone_ws("FlapDrone")) as drone,
    ):
        frame = await drone.wait_type("processing_task", task_id=task_id)
        await drone.send(result_message(task_id, "FlapDrone"))
        await app.wait_type("processing_result_received", task_id=task_id)
    assert frame["attempt"] == 1 and frame["resumed"] is True
    task = await _task(http, task_id)
    assert (task["status"], task["attempts"], task["error_code"]) == ("completed", 1, None)
    # The application never heard of a failure or a requeue
    assert [f["status"] for f in app.of_type("task_status_update")] in ([], ["completed"])


async def test_session_second_connection_replaces_the_first_and_gets_its_tasks(
    server: Server, http: httpx.AsyncClient
) -> None:
    # Given a drone holding two tasks
    ids = {await _create(http, task_body("TwinApp", "TwinDrone")) for _ in range(2)}
    async with WsClient(server.drone_ws("TwinDrone", capacity=2)) as old:
        await old.wait_for(lambda _: len(old.of_type("processing_task")) == 2)

        # When a second connection with the same identity opens
        async with (
            WsClient(server.app_ws("TwinApp")) as app,
            WsClient(server.drone_ws("TwinDrone", capacity=2)) as new,
        ):
            # Then the first is closed with 4000, and the second holds both tasks
            assert await old.wait_closed() == 4000
            await new.wait_for(lambda _: len(new.of_type("processing_task")) == 2)
            for task_id in ids:
                await new.send(result_message(task_id, "TwinDrone"))
            for task_id in ids:
                await app.wait_type("processing_result_received", task_id=task_id)

    resent = new.of_type("processing_task")
    assert {f["task_id"] for f in resent} == ids
    assert all(f["attempt"] == 1 and f["resumed"] is True for f in resent)
    for task_id in ids:
        task = await _task(http, task_id)
        assert (task["status"], task["attempts"]) == ("completed", 1)


async def test_session_in_progress_timeouts_still_count_across_reconnects(
    server: Server, http: httpx.AsyncClient
) -> None:
    # Given a drone that never answers a task that may be tried twice, and drops once
    body = task_body("TimeApp", "SilentFlapDrone", timeout_s=1.0, max_attempts=2)
    task_id = await _create(http, body)
    async with WsClient(server.drone_ws("SilentFlapDrone")) as drone:
        first = await drone.wait_type("processing_task", task_id=task_id)

    # When it comes back and stays silent
    async with (
        WsClient(server.app_ws("TimeApp")) as app,
        WsClient(server.drone_ws("SilentFlapDrone")) as drone,
    ):
        failed = await app.wait_type("task_status_update", task_id=task_id, status="failed")

    # Then each timeout was an attempt, the flap was not, and the task failed at max_attempts
    assert first["attempt"] == 1
    assert {f["attempt"] for f in drone.of_type("processing_task")} <= {1, 2}
    assert failed["additional_data"]["error_code"] == "max_attempts"
    task = await _task(http, task_id)
    assert (task["status"], task["error_code"], task["attempts"]) == ("failed", "max_attempts", 2)
