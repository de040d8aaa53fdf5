"""A task that runs longer than RabbitMQ's consumer_timeout completes exactly once: droneflow
never holds a delivery unacked while a drone works (celery#6760 is the failure it avoids)."""

import asyncio
import shutil

import httpx
import pytest

from tests.e2e.clients import WsClient, result_message, task_body
from tests.faults.test_fault_suite import short_consumer_timeout
from tests.processes import Cluster

pytestmark = [pytest.mark.distributed, pytest.mark.rabbitmq]

CONSUMER_TIMEOUT_MS = 2000


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl")
async def test_task_longer_than_consumer_timeout_completes_exactly_once(
    rabbitmq_url: str, cluster_factory: object
) -> None:
    with short_consumer_timeout(CONSUMER_TIMEOUT_MS):
        cluster: Cluster = await cluster_factory(gateways=1)  # type: ignore[operator]
        gateway = cluster.gateways[0]
        async with (
            WsClient(f"{gateway.ws_url}/ws/application/LongApp") as app,
            WsClient(f"{gateway.ws_url}/ws/drone/LongDrone") as drone,
            httpx.AsyncClient(base_url=gateway.base_url) as http,
        ):
            long_task = (
                await http.post("/api/processing-tasks", json=task_body("LongApp", "LongDrone"))
            ).json()["task_id"]
            queued = (
                await http.post("/api/processing-tasks", json=task_body("LongApp", "LongDrone"))
            ).json()["task_id"]
            await drone.wait_type("processing_task", task_id=long_task)
            # The drone works well past consumer_timeout, with a second task waiting behind it.
            # RabbitMQ would close a channel holding an unacked delivery this long; progress
            # reports keep flowing while it works.
            for progress in range(5):
                await drone.send(
                    {
                        "type": "task_status_update",
                        "data": {
                            "task_id": long_task,
                            "status": "processing",
                            "additional_data": {"progress": progress * 20},
                        },
                    }
                )
                await app.wait_for(
                    lambda f, p=progress * 20: (
                        f.get("type") == "task_status_update"
                        and f["additional_data"].get("progress") == p
                    ),
                    timeout_s=5,
                )
                await asyncio.sleep(CONSUMER_TIMEOUT_MS / 1000 * 0.8)  # time must pass here
            await drone.send(result_message(long_task, "LongDrone"))
            await app.wait_type("processing_result_received", task_id=long_task)
            await drone.wait_type("processing_task", task_id=queued)
            await drone.send(result_message(queued, "LongDrone"))
            await app.wait_type("processing_result_received", task_id=queued)
            await drone.roundtrip_ping()

            results = (await http.get("/api/processing-results/drone/LongDrone")).json()
            task = (await http.get(f"/api/processing-tasks/{long_task}")).json()

    assert [f["task_id"] for f in drone.of_type("processing_task")] == [long_task, queued]
    assert sorted(r["task_id"] for r in results["results"]) == sorted([long_task, queued])
    assert task["status"] == "completed" and task["attempts"] == 1
    assert len(app.of_type("processing_result_received")) == 2
