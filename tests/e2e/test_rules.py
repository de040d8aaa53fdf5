"""Status only moves forward, terminal states are final, and drones report only on their own."""

import httpx

from tests.e2e.clients import WsClient, result_message, task_body
from tests.e2e.conftest import Server


async def _task(http: httpx.AsyncClient, app_id: str, drone_id: str) -> str:
    task_id: str = (
        await http.post("/api/processing-tasks", json=task_body(app_id, drone_id))
    ).json()["task_id"]
    return task_id


async def test_result_straight_from_pending_completes_the_task(
    server: Server, http: httpx.AsyncClient
) -> None:
    task_id = await _task(http, "RuleApp", "RuleDrone")
    async with (
        WsClient(server.app_ws("RuleApp")) as app,
        WsClient(server.drone_ws("RuleDrone")) as drone,
    ):
        await drone.wait_type("processing_task", task_id=task_id)
        await drone.send(result_message(task_id, "RuleDrone"))
        await app.wait_type("processing_result_received", task_id=task_id)
    assert (await http.get(f"/api/processing-tasks/{task_id}")).json()["status"] == "completed"


async def test_second_result_is_acknowledged_and_not_stored_again(
    server: Server, http: httpx.AsyncClient
) -> None:
    task_id = await _task(http, "RuleApp", "RuleDrone2")
    async with (
        WsClient(server.app_ws("RuleApp")) as app,
        WsClient(server.drone_ws("RuleDrone2")) as drone,
    ):
        await drone.wait_type("processing_task", task_id=task_id)
        await drone.send(result_message(task_id, "RuleDrone2", result_data={"n": 1}))
        first = await app.wait_type("processing_result_received", task_id=task_id)
        await drone.send(result_message(task_id, "RuleDrone2", result_data={"n": 2}, success=False))
        await drone.roundtrip_ping()
        await app.roundtrip_ping()

    assert drone.of_type("error") == []
    stored = (await http.get(f"/api/processing-results/{task_id}")).json()
    assert stored["result_data"] == {"n": 1} and stored["result_id"] == first["result_id"]
    assert (await http.get("/api/processing-results/drone/RuleDrone2")).json()["count"] == 1
    assert (await http.get(f"/api/processing-tasks/{task_id}")).json()["status"] == "completed"
    assert len(app.of_type("processing_result_received")) == 1


async def test_status_update_after_completion_changes_nothing(
    server: Server, http: httpx.AsyncClient
) -> None:
    task_id = await _task(http, "RuleApp", "RuleDrone3")
    async with (
        WsClient(server.app_ws("RuleApp")) as app,
        WsClient(server.drone_ws("RuleDrone3")) as drone,
    ):
        await drone.wait_type("processing_task", task_id=task_id)
        await drone.send(result_message(task_id, "RuleDrone3"))
        await app.wait_type("processing_result_received", task_id=task_id)
        await drone.send(
            {"type": "task_status_update", "data": {"task_id": task_id, "status": "processing"}}
        )
        await drone.roundtrip_ping()
        # a status update after the result must not reach the app either: a second task proves
        # everything before it was processed
        second = await _task(http, "RuleApp", "RuleDrone3")
        await drone.wait_type("processing_task", task_id=second)
        await drone.send(result_message(second, "RuleDrone3"))
        await app.wait_type("processing_result_received", task_id=second)

    assert (await http.get(f"/api/processing-tasks/{task_id}")).json()["status"] == "completed"
    assert app.of_type("task_status_update") == []


async def test_drone_cannot_report_on_another_drones_task(
    server: Server, http: httpx.AsyncClient
) -> None:
    task_id = await _task(http, "RuleApp", "OwnerDrone")
    async with WsClient(server.drone_ws("IntruderDrone")) as intruder:
        await intruder.send(result_message(task_id, "IntruderDrone"))
        error = await intruder.wait_type("error")
        await intruder.send(
            {"type": "task_status_update", "data": {"task_id": task_id, "status": "processing"}}
        )
        await intruder.wait_for(lambda _: len(intruder.of_type("error")) == 2)
        await intruder.roundtrip_ping()

    assert error["code"] == "not_your_task"
    task = (await http.get(f"/api/processing-tasks/{task_id}")).json()
    assert task["status"] == "pending"
    assert (await http.get(f"/api/processing-results/{task_id}")).status_code == 404


async def test_drone_id_in_message_must_match_the_path(
    server: Server, http: httpx.AsyncClient
) -> None:
    task_id = await _task(http, "RuleApp", "PathDrone")
    async with WsClient(server.drone_ws("PathDrone")) as drone:
        await drone.wait_type("processing_task", task_id=task_id)
        await drone.send(result_message(task_id, "SomeoneElse"))
        error = await drone.wait_type("error")
        await drone.roundtrip_ping()
    assert error["code"] == "id_mismatch"
    assert (await http.get(f"/api/processing-results/{task_id}")).status_code == 404


async def test_drone_may_not_end_a_task_through_a_status_update(
    server: Server, http: httpx.AsyncClient
) -> None:
    task_id = await _task(http, "RuleApp", "StatusDrone")
    async with WsClient(server.drone_ws("StatusDrone")) as drone:
        await drone.wait_type("processing_task", task_id=task_id)
        await drone.send(
            {"type": "task_status_update", "data": {"task_id": task_id, "status": "completed"}}
        )
        error = await drone.wait_type("error")
        await drone.roundtrip_ping()
    assert error["code"] == "invalid_status"
    assert (await http.get(f"/api/processing-tasks/{task_id}")).json()["status"] == "pending"
