"""The documented flow across separate gateway, dispatcher and result-writer processes."""

import asyncio
from collections import Counter

import httpx
import pytest

from tests.e2e.clients import WsClient, result_message, task_body
from tests.processes import Cluster
from tests.sim import SimApp, SimDrone

pytestmark = pytest.mark.distributed


async def test_cluster_flow_crosses_gateways(
    cluster_factory: object, store_env: dict[str, str]
) -> None:
    cluster: Cluster = await cluster_factory(**store_env)  # type: ignore[operator]
    gateway_a, gateway_b = cluster.gateways

    async with (
        WsClient(f"{gateway_a.ws_url}/ws/application/AppX") as app,
        WsClient(f"{gateway_b.ws_url}/ws/drone/DroneX") as drone,
    ):
        await drone.wait_type("connection_established")
        # An application on gateway A submits; the drone sits on gateway B
        await app.send(
            {"type": "processing_task", "request_id": "r1", "data": task_body("AppX", "DroneX")}
        )
        task_id = (await app.wait_type("task_created"))["task_id"]
        await drone.wait_type("processing_task", task_id=task_id)
        await drone.send(
            {
                "type": "task_status_update",
                "data": {
                    "task_id": task_id,
                    "status": "processing",
                    "additional_data": {"progress": 40},
                },
            }
        )
        update = await app.wait_type("task_status_update", task_id=task_id)
        await drone.send(result_message(task_id, "DroneX", result_data={"ok": True}))
        result = await app.wait_type("processing_result_received", task_id=task_id)

        # A task created over REST on gateway A reaches the drone on gateway B
        async with httpx.AsyncClient(base_url=gateway_a.base_url) as http_a:
            rest_id = (
                await http_a.post("/api/processing-tasks", json=task_body("AppX", "DroneX"))
            ).json()["task_id"]
        await drone.wait_type("processing_task", task_id=rest_id)
        await drone.send(result_message(rest_id, "DroneX"))
        await app.wait_type("processing_result_received", task_id=rest_id)

    assert update["additional_data"] == {"progress": 40}
    assert result["result_data"] == {"ok": True}
    # Every gateway reads the same state
    for gateway in cluster.gateways:
        async with httpx.AsyncClient(base_url=gateway.base_url) as http:
            assert (await http.get(f"/api/processing-tasks/{task_id}")).json()[
                "status"
            ] == "completed"
            assert (await http.get(f"/api/processing-results/{task_id}")).json()["result_data"] == {
                "ok": True
            }
            assert (await http.get("/api/processing-results/drone/DroneX")).json()["count"] == 2


async def test_cluster_with_many_of_each_service_delivers_and_stores_each_task_once(
    cluster_factory: object, store_env: dict[str, str]
) -> None:
    cluster: Cluster = await cluster_factory(gateways=2, dispatchers=2, writers=2, **store_env)  # type: ignore[operator]
    stop = asyncio.Event()
    drones = [
        SimDrone(cluster.ws_urls[i % 2 :] + cluster.ws_urls[: i % 2], f"MD{i}", capacity=2)
        for i in range(4)
    ]
    apps = [SimApp(cluster.ws_urls[i % 2 :] + cluster.ws_urls[: i % 2], f"MA{i}") for i in range(2)]
    runners = [asyncio.create_task(x.run(stop)) for x in [*drones, *apps]]
    try:
        await asyncio.gather(
            *(
                app.submit(
                    f"{app.app_id}-{n}", task_body(app.app_id, f"MD{n % 4}", priority=1 + n % 5)
                )
                for app in apps
                for n in range(60)
            )
        )
        missing = await asyncio.gather(*(app.wait_all_final(60) for app in apps))
    finally:
        stop.set()
        await asyncio.gather(*runners, return_exceptions=True)

    assert missing == [set(), set()]
    deliveries = sum((d.deliveries for d in drones), start=Counter())
    assert len(deliveries) == 120
    assert max(deliveries.values()) == 1, "a task reached a drone twice"
    async with httpx.AsyncClient(base_url=cluster.gateways[0].base_url) as http:
        counts = [
            (await http.get(f"/api/processing-results/drone/MD{i}?limit=1000")).json()["count"]
            for i in range(4)
        ]
    assert sum(counts) == 120
    assert all(app.foreign == [] for app in apps)
