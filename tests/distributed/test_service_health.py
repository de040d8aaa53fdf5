"""Issue 10: the dispatcher and the result writer, as processes of their own, serve /healthz,
/readyz and /metrics on DRONEFLOW_METRICS_PORT; and each move of a task is measured in the
process that stores it. Each process is fresh, so its counters start at zero."""

import asyncio
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from tests.e2e.clients import WsClient, result_message, task_body
from tests.processes import Cluster, ServiceProcess
from tests.scrape import scrape, wait_status
from tests.tcp_proxy import LateTcpProxy

RETRY_TIMEOUT_S = 30.0

pytestmark = pytest.mark.distributed


def _headless(cluster: Cluster) -> list[tuple[ServiceProcess, str]]:
    return [(cluster.dispatchers[0], "dispatcher"), (cluster.writers[0], "result writer")]


async def test_dispatcher_and_result_writer_serve_healthz_readyz_and_metrics(
    cluster_factory: object,
) -> None:
    cluster: Cluster = await cluster_factory(gateways=1)  # type: ignore[operator]
    for process, service in _headless(cluster):
        async with httpx.AsyncClient(base_url=process.base_url) as http:
            healthz = await http.get("/healthz")
            readyz = await http.get("/readyz")
            metrics = await scrape(http)

        assert healthz.status_code == 200
        assert healthz.json() == {"status": "ok", "service": service}
        assert readyz.status_code == 200
        assert readyz.json() == {
            "status": "ready",
            "rabbitmq": "ok",
            "store": "ok",
            "service": service,
        }
        for dependency in ("rabbitmq", "store"):
            up = metrics.value("droneflow_dependency_up", dependency=dependency, service=service)
            assert up == 1, (service, dependency)
        for queue in ("intake", "drone_events", "dead_letters"):
            assert metrics.has("droneflow_queue_depth", queue=queue), (service, queue)


async def test_each_move_of_a_task_is_measured_by_the_process_that_stores_it(
    cluster_factory: object,
) -> None:
    cluster: Cluster = await cluster_factory(gateways=1)  # type: ignore[operator]
    gateway, writer = cluster.gateways[0], cluster.writers[0]
    app_id, drone_id = f"HApp{uuid.uuid4().hex[:6]}", f"HDrone{uuid.uuid4().hex[:6]}"
    async with (
        httpx.AsyncClient(base_url=gateway.base_url) as http,
        WsClient(f"{gateway.ws_url}/ws/application/{app_id}") as app,
        WsClient(f"{gateway.ws_url}/ws/drone/{drone_id}") as drone,
    ):
        await drone.wait_type("connection_established")
        # Given a task completed across the gateway, the dispatcher and the result writer
        body = task_body(app_id, drone_id, task_type="survey")
        task_id = (await http.post("/api/processing-tasks", json=body)).json()["task_id"]
        await drone.wait_type("processing_task", task_id=task_id)
        await drone.send(result_message(task_id, drone_id))
        await app.wait_type("processing_result_received", task_id=task_id)
        # And a request the gateway refuses
        assert (await http.get(f"/api/processing-tasks/{task_id}x")).status_code == 404
        at_gateway = await scrape(http)
    async with httpx.AsyncClient(base_url=writer.base_url) as http:
        at_writer = await scrape(http)

    # Then the gateway measured its creation and its wait for the drone
    assert at_gateway.value("droneflow_tasks_total", status="pending", task_type="survey") == 1
    assert at_gateway.value("droneflow_task_stage_seconds_count", stage="queued") == 1
    assert at_gateway.value("droneflow_rejections_total", transport="http", reason="404") == 1
    assert at_gateway.value("droneflow_drones_connected") == 1
    assert at_gateway.value("droneflow_apps_connected") == 1
    # And the result writer its end: the round trip, the time with the drone, the final status
    completed = {"status": "completed"}
    assert at_writer.value("droneflow_task_round_trip_seconds_count", **completed) == 1
    assert at_writer.value("droneflow_task_stage_seconds_count", stage="delivered") == 1
    assert at_writer.value("droneflow_tasks_total", task_type="survey", **completed) == 1


async def test_a_dispatcher_that_cannot_connect_yet_is_not_ready_until_it_does(
    cluster_factory: object, tmp_path: Path
) -> None:
    cluster: Cluster = await cluster_factory(gateways=0, dispatchers=0, writers=0)  # type: ignore[operator]
    amqp = urlsplit(cluster.env["DRONEFLOW_BROKER_URL"])
    async with LateTcpProxy(amqp.hostname or "127.0.0.1", amqp.port or 5672) as proxy:
        netloc = f"{amqp.netloc.rsplit(':', 1)[0]}:{proxy.port}"
        dispatcher = ServiceProcess(
            "dispatcher",
            {**cluster.env, "DRONEFLOW_BROKER_URL": urlunsplit(amqp._replace(netloc=netloc))},
            tmp_path,
            "late-dispatcher",
        )
        cluster.dispatchers.append(dispatcher)  # stopped with the cluster
        # Given a dispatcher that RabbitMQ turns away
        await dispatcher.start()
        async with asyncio.timeout(RETRY_TIMEOUT_S):
            await proxy.turned_away_at_least(1)
        async with httpx.AsyncClient(base_url=dispatcher.base_url, timeout=10) as http:
            # Then it runs, but is not ready, and says why
            assert (await http.get("/healthz")).status_code == 200
            waiting = await http.get("/readyz")
            assert waiting.status_code == 503
            assert waiting.json()["reason"].startswith("not connected yet")
            # And once RabbitMQ lets it in, it is
            proxy.open()
            ready = await wait_status(http, "/readyz", 200, RETRY_TIMEOUT_S)
    assert ready.json()["status"] == "ready"
