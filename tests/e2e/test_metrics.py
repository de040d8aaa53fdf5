"""Issue 10: what /metrics and /readyz tell an operator, on an embedded server driven over its
sockets. Counters are shared by every server of this test process, so each test compares a
scrape taken before with one taken after."""

import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.clients import WsClient, result_message, task_body
from tests.e2e.conftest import Server
from tests.scrape import scrape, wait_scrape, wait_status
from tests.tcp_proxy import LateTcpProxy


def _ids() -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return f"MApp{suffix}", f"MDrone{suffix}"


async def test_a_completed_task_is_in_the_round_trip_stage_and_status_metrics(
    server: Server, http: httpx.AsyncClient
) -> None:
    app_id, drone_id = _ids()
    before = await scrape(http)
    async with WsClient(server.app_ws(app_id)) as app, WsClient(server.drone_ws(drone_id)) as drone:
        await drone.wait_type("connection_established")
        # Given a task that a drone receives and completes
        body = task_body(app_id, drone_id, task_type="metrics_survey")
        task_id = (await http.post("/api/processing-tasks", json=body)).json()["task_id"]
        await drone.wait_type("processing_task", task_id=task_id)
        await drone.send(result_message(task_id, drone_id))
        # When its application has been told
        await app.wait_type("processing_result_received", task_id=task_id)
    after = await scrape(http)

    # Then its round trip, both stages and both statuses it entered are counted
    def grew(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert grew("droneflow_task_round_trip_seconds_count", status="completed") == 1
    assert grew("droneflow_task_round_trip_seconds_bucket", status="completed", le="+Inf") == 1
    assert grew("droneflow_task_stage_seconds_count", stage="queued") == 1
    assert grew("droneflow_task_stage_seconds_count", stage="delivered") == 1
    assert grew("droneflow_tasks_total", status="pending", task_type="metrics_survey") == 1
    assert grew("droneflow_tasks_total", status="completed", task_type="metrics_survey") == 1
    assert grew("droneflow_tasks_delivered_total") == 1


async def test_a_cancelled_task_ends_its_round_trip_as_cancelled(http: httpx.AsyncClient) -> None:
    app_id, drone_id = _ids()
    before = await scrape(http)
    task_id = (await http.post("/api/processing-tasks", json=task_body(app_id, drone_id))).json()[
        "task_id"
    ]
    assert (await http.post(f"/api/processing-tasks/{task_id}/cancel")).status_code == 200
    after = await scrape(http)

    assert (
        after.value("droneflow_task_round_trip_seconds_count", status="cancelled")
        - before.value("droneflow_task_round_trip_seconds_count", status="cancelled")
        == 1
    )
    # Never delivered: no time held by a drone to show
    assert after.value("droneflow_task_stage_seconds_count", stage="delivered") == before.value(
        "droneflow_task_stage_seconds_count", stage="delivered"
    )


async def test_bad_requests_and_bad_frames_count_as_rejections_by_reason(
    server: Server, http: httpx.AsyncClient
) -> None:
    app_id, _ = _ids()
    before = await scrape(http)
    # Given a body that is not JSON, an unknown task, and a frame that is not JSON
    bad_body = await http.post(
        "/api/processing-tasks", content=b"{not json", headers={"content-type": "application/json"}
    )
    unknown = await http.get("/api/processing-tasks/task_000000000000")
    async with WsClient(server.app_ws(app_id)) as app:
        await app.wait_type("connection_established")
        await app.send("{not json")
        await app.wait_type("error", code="invalid_json")
    # And a socket whose id is not one
    async with WsClient(server.drone_ws("bad.id")) as refused:
        assert await refused.wait_closed() == 1008
    after = await scrape(http)

    def grew(**labels: str) -> float:
        name = "droneflow_rejections_total"
        return after.value(name, **labels) - before.value(name, **labels)

    assert (bad_body.status_code, unknown.status_code) == (422, 404)
    assert grew(transport="http", reason="422") == 1
    assert grew(transport="http", reason="404") == 1
    assert grew(transport="websocket", reason="invalid_json") == 1
    assert grew(transport="websocket", reason="close_policy_violation") == 1


async def test_a_drone_that_reconnects_holding_a_task_counts_a_redelivery(
    server: Server, http: httpx.AsyncClient
) -> None:
    app_id, drone_id = _ids()
    before = await scrape(http)
    task_id = (await http.post("/api/processing-tasks", json=task_body(app_id, drone_id))).json()[
        "task_id"
    ]
    async with WsClient(server.drone_ws(drone_id)) as drone:
        await drone.wait_type("processing_task", task_id=task_id)
    # When the drone comes back, it is sent the task it holds again
    async with WsClient(server.drone_ws(drone_id)) as drone:
        await drone.wait_type("processing_task", task_id=task_id, resumed=True)
    name = "droneflow_task_redeliveries_total"
    await wait_scrape(
        http,
        lambda now: (
            now.value(name, reason="reconnect") - before.value(name, reason="reconnect") == 1
        ),
    )


async def test_a_task_whose_timeout_runs_out_is_redelivered_then_fails_for_max_attempts(
    server: Server, http: httpx.AsyncClient
) -> None:
    app_id, drone_id = _ids()
    before = await scrape(http)
    body = task_body(app_id, drone_id, timeout_s=0.3, max_attempts=2)
    async with WsClient(server.app_ws(app_id)) as app, WsClient(server.drone_ws(drone_id)) as drone:
        await app.wait_type("connection_established")
        task_id = (await http.post("/api/processing-tasks", json=body)).json()["task_id"]
        # The drone never answers: the sweep times both attempts out
        await drone.wait_type("processing_task", task_id=task_id, attempt=2)
        await app.wait_type("task_status_update", task_id=task_id, status="failed")
    after = await scrape(http)

    def grew(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert grew("droneflow_task_redeliveries_total", reason="timeout") == 1
    assert grew("droneflow_task_round_trip_seconds_count", status="failed") == 1
    assert grew("droneflow_task_stage_seconds_count", stage="delivered") == 1
    assert grew("droneflow_task_stage_seconds_count", stage="queued") == 1  # the first only


async def test_metrics_show_the_shared_queue_depths(http: httpx.AsyncClient) -> None:
    metrics = await scrape(http)
    for queue in ("intake", "drone_events", "dead_letters"):
        assert metrics.has("droneflow_queue_depth", queue=queue), queue


async def test_readyz_is_200_naming_both_dependencies_ok(http: httpx.AsyncClient) -> None:
    response = await http.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "rabbitmq": "ok", "store": "ok"}


@pytest.fixture
async def store_proxy(mongodb_url: str) -> AsyncIterator[tuple[LateTcpProxy, str]]:
    """A MongoDB that can be cut off from the server: the URL of a fresh database behind it."""
    target = urlsplit(mongodb_url)
    assert target.hostname is not None and target.port is not None
    async with LateTcpProxy(target.hostname, target.port) as proxy:
        proxy.open()
        database = f"droneflow_readyz_{uuid.uuid4().hex[:8]}"
        yield proxy, f"mongodb://127.0.0.1:{proxy.port}/{database}?directConnection=true"


@pytest.mark.mongodb
async def test_readyz_is_503_naming_the_store_while_it_is_unreachable(
    server_factory: Any, store_proxy: tuple[LateTcpProxy, str]
) -> None:
    proxy, store_url = store_proxy
    server: Server = await server_factory(store_url=store_url)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        assert (await http.get("/readyz")).status_code == 200
        # When the store cannot be reached
        proxy.cut()
        away = await http.get("/readyz")
        # Then /readyz says so, and why
        assert away.status_code == 503
        assert away.json()["store"] == "unavailable" and away.json()["rabbitmq"] == "ok"
        assert away.json()["reason"].startswith("store ")
        # And it is ready again once the store is back
        proxy.open()
        back = await wait_status(http, "/readyz", 200)
        assert back.json() == {"status": "ready", "rabbitmq": "ok", "store": "ok"}
