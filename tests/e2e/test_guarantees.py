"""Timeouts, retries, cancellation, idempotency and catch-up (task options are extensions)."""

from typing import Any

import httpx

from tests.e2e.clients import WsClient, result_message, task_body
from tests.e2e.conftest import Server
from tests.e2e.metrics import counter, wait_counter


async def _create(http: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await http.post("/api/processing-tasks", json=body)
    assert response.status_code == 200, response.text
    task_id: str = response.json()["task_id"]
    return task_id


async def test_idempotency_key_returns_the_same_task_over_rest_and_ws(
    server: Server, http: httpx.AsyncClient
) -> None:
    body = task_body("IdemApp", "IdemDrone", idempotency_key="order-17")
    first = await _create(http, body)
    again = await _create(http, body)
    other_app = await _create(http, {**body, "app_id": "OtherApp"})
    async with WsClient(server.app_ws("IdemApp")) as app:
        await app.send({"type": "processing_task", "request_id": "x", "data": body})
        created = await app.wait_type("task_created")

    assert again == first and created["task_id"] == first
    assert created["created"] is False
    assert other_app != first
    pending = (await http.get("/api/processing-tasks/drone/IdemDrone/pending")).json()
    assert pending["count"] == 2


async def test_in_progress_timeout_redelivers_then_fails_at_max_attempts(
    server: Server, http: httpx.AsyncClient
) -> None:
    body = task_body("SlowApp", "SilentDrone", timeout_s=0.5, max_attempts=2)
    async with (
        WsClient(server.app_ws("SlowApp")) as app,
        WsClient(server.drone_ws("SilentDrone")) as drone,
    ):
        task_id = await _create(http, body)
        # The drone never answers: each delivery times out and is taken back from it
        await drone.wait_type("processing_task", task_id=task_id)
        await drone.wait_type("task_cancelled", task_id=task_id)
        await drone.wait_for(lambda _: len(drone.of_type("processing_task")) == 2)
        await drone.wait_for(lambda _: len(drone.of_type("task_cancelled")) == 2)
        failed = await app.wait_type("task_status_update", task_id=task_id, status="failed")
        requeued = app.of_type("task_status_update")[0]

    assert drone.of_type("task_cancelled")[0]["reason"] == "timeout"
    assert requeued["additional_data"]["requeued"] is True
    assert requeued["additional_data"]["reason"] == "timeout"
    assert failed["additional_data"]["error_code"] == "max_attempts"
    task = (await http.get(f"/api/processing-tasks/{task_id}")).json()
    assert task["status"] == "failed" and task["error_code"] == "max_attempts"
    assert task["attempts"] == 2
    assert task["delivered_at"] is not None and task["finished_at"] is not None


async def test_capacity_slot_of_a_timed_out_task_is_freed(
    server: Server, http: httpx.AsyncClient
) -> None:
    async with WsClient(server.drone_ws("SlotDrone")) as drone:
        stuck = await _create(http, task_body("A", "SlotDrone", timeout_s=0.4, max_attempts=1))
        await drone.wait_type("processing_task", task_id=stuck)
        next_task = await _create(http, task_body("A", "SlotDrone"))
        await drone.wait_type("task_cancelled", task_id=stuck)
        await drone.wait_type("processing_task", task_id=next_task)


async def test_ttl_expires_a_task_that_waited_too_long(
    server: Server, http: httpx.AsyncClient
) -> None:
    async with WsClient(server.app_ws("TtlApp")) as app:
        task_id = await _create(http, task_body("TtlApp", "NobodyDrone", ttl_s=0.3))
        update = await app.wait_type("task_status_update", task_id=task_id, status="failed")
    assert update["additional_data"]["error_code"] == "expired"
    async with WsClient(server.drone_ws("NobodyDrone")) as drone:
        await drone.roundtrip_ping()
        probe = await _create(http, task_body("TtlApp", "NobodyDrone"))
        first = await drone.wait_type("processing_task")
    assert first["task_id"] == probe, "an expired task was delivered"
    task = (await http.get(f"/api/processing-tasks/{task_id}")).json()
    assert task["error_code"] == "expired" and task["attempts"] == 0


async def test_cancelled_pending_task_is_never_delivered(
    server: Server, http: httpx.AsyncClient
) -> None:
    task_id = await _create(http, task_body("CancelApp", "CancelDrone", priority=5))
    response = await http.post(f"/api/processing-tasks/{task_id}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"

    async with WsClient(server.drone_ws("CancelDrone")) as drone:
        probe = await _create(http, task_body("CancelApp", "CancelDrone", priority=1))
        first = await drone.wait_type("processing_task")
    assert first["task_id"] == probe
    task = (await http.get(f"/api/processing-tasks/{task_id}")).json()
    assert task["status"] == "cancelled" and task["error_code"] == "cancelled"
    assert (await http.post(f"/api/processing-tasks/{task_id}/cancel")).status_code == 409
    assert (await http.post("/api/processing-tasks/task_nope/cancel")).status_code == 404


async def test_cancel_over_ws_reaches_the_drone_frees_its_slot_and_ignores_its_late_result(
    server: Server, http: httpx.AsyncClient
) -> None:
    async with (
        WsClient(server.app_ws("CancelApp")) as app,
        WsClient(server.drone_ws("HoldDrone")) as drone,
    ):
        held = await _create(http, task_body("CancelApp", "HoldDrone"))
        waiting = await _create(http, task_body("CancelApp", "HoldDrone"))
        await drone.wait_type("processing_task", task_id=held)

        await app.send({"type": "cancel_task", "data": {"task_id": held}})
        await app.wait_type("task_cancelled", task_id=held)
        update = await app.wait_type("task_status_update", task_id=held, status="cancelled")
        await drone.wait_type("task_cancelled", task_id=held)
        await drone.wait_type("processing_task", task_id=waiting)  # the slot was freed
        await drone.send(result_message(held, "HoldDrone"))  # too late
        await drone.roundtrip_ping()

    assert drone.of_type("error") == []
    assert update["additional_data"]["error_code"] == "cancelled"
    assert (await http.get(f"/api/processing-tasks/{held}")).json()["status"] == "cancelled"
    assert (await http.get(f"/api/processing-results/{held}")).status_code == 404


async def test_app_cannot_cancel_another_apps_task(server: Server, http: httpx.AsyncClient) -> None:
    task_id = await _create(http, task_body("OwnerApp", "D1"))
    async with WsClient(server.app_ws("OtherApp")) as other:
        await other.send({"type": "cancel_task", "data": {"task_id": task_id}})
        error = await other.wait_type("error")
    assert error["code"] == "unknown_task"
    assert (await http.get(f"/api/processing-tasks/{task_id}")).json()["status"] == "pending"


async def test_catch_up_listing_pages_through_an_apps_tasks(http: httpx.AsyncClient) -> None:
    ids = [await _create(http, task_body("PageApp", "PageDrone")) for _ in range(7)]
    await _create(http, task_body("NotPageApp", "PageDrone"))

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"app_id": "PageApp", "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await http.get("/api/processing-tasks", params=params)).json()
        seen += [t["task_id"] for t in page["tasks"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and pages == 3

    first = (await http.get(f"/api/processing-tasks/{ids[0]}")).json()
    since = (
        await http.get(
            "/api/processing-tasks",
            params={"app_id": "PageApp", "updated_since": first["updated_at"]},
        )
    ).json()
    assert {t["task_id"] for t in since["tasks"]} <= set(ids)
    done = (
        await http.get("/api/processing-tasks", params={"app_id": "PageApp", "status": "completed"})
    ).json()
    assert done["count"] == 0
    bad = await http.get("/api/processing-tasks", params={"cursor": "garbage!"})
    assert bad.status_code == 422
    assert (
        await http.get("/api/processing-tasks", params={"updated_since": "yesterday"})
    ).status_code == 422
    assert (await http.get("/api/processing-tasks", params={"status": "weird"})).status_code == 422


async def test_task_options_are_validated(http: httpx.AsyncClient) -> None:
    for bad in ({"timeout_s": 0}, {"ttl_s": -1}, {"max_attempts": 0}, {"idempotency_key": ""}):
        response = await http.post("/api/processing-tasks", json=task_body("A", "D", **bad))
        assert response.status_code == 422, bad


async def test_aging_lets_an_old_low_priority_task_overtake_newer_higher_ones(
    server_factory: object,
) -> None:
    server: Server = await server_factory(aging_interval_s=0.3)  # type: ignore[operator]
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        routed = await counter(http, "droneflow_tasks_routed")
        old = await _create(http, task_body("AgeApp", "AgeDrone", priority=1))
        # Routed once, then re-routed twice: each re-route waits one interval, so the second
        # went out at priority 3 or more (how many more depends on sweep timing).
        await wait_counter(http, "droneflow_tasks_routed", routed + 3)
        newer = await _create(http, task_body("AgeApp", "AgeDrone", priority=2))
        async with WsClient(server.drone_ws("AgeDrone")) as drone:
            first = await drone.wait_type("processing_task")
            await drone.send(result_message(first["task_id"], "AgeDrone"))
            second = await drone.wait_for(
                lambda f: f.get("type") == "processing_task" and f["task_id"] != first["task_id"]
            )
            await drone.send(result_message(second["task_id"], "AgeDrone"))
            await drone.roundtrip_ping()
    assert [first["task_id"], second["task_id"]] == [old, newer]
    assert len(drone.of_type("processing_task")) == 2, "a re-routed copy was delivered twice"
