"""`GET /api/drones` across gateway processes: every gateway answers for the whole fleet, and
the drones of a gateway that died drop out once its presence entries expire."""

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.e2e.clients import WsClient, task_body
from tests.processes import Cluster, ServiceProcess

pytestmark = pytest.mark.distributed

PRESENCE_INTERVAL_S = "0.5"
WAIT_S = 20.0
Drones = dict[str, dict[str, Any]]


def name_of(gateway: ServiceProcess) -> str:
    return f"{socket.gethostname()}:{gateway.port}"


async def listed_until(gateway: ServiceProcess, done: Callable[[Drones], bool]) -> Drones:
    """The gateway's listing (drone id → entry) once `done` holds of it."""
    async with httpx.AsyncClient(base_url=gateway.base_url) as http, asyncio.timeout(WAIT_S):
        while True:
            body = (await http.get("/api/drones")).json()
            drones = {drone["drone_id"]: drone for drone in body["drones"]}
            if done(drones):
                return drones
            await asyncio.sleep(0.1)


async def test_every_gateway_lists_all_drones_and_forgets_those_of_a_dead_one(
    cluster_factory: object, store_env: dict[str, str]
) -> None:
    cluster: Cluster = await cluster_factory(  # type: ignore[operator]
        DRONEFLOW_PRESENCE_INTERVAL_S=PRESENCE_INTERVAL_S, **store_env
    )
    gateway_a, gateway_b = cluster.gateways

    # Given a drone on each gateway, DroneA holding a task submitted through gateway B
    async with (
        WsClient(f"{gateway_a.ws_url}/ws/drone/DroneA?capacity=2") as drone_a,
        WsClient(f"{gateway_b.ws_url}/ws/drone/DroneB?capacity=5") as drone_b,
    ):
        await drone_a.wait_type("connection_established")
        await drone_b.wait_type("connection_established")
        async with httpx.AsyncClient(base_url=gateway_b.base_url) as http:
            response = await http.post("/api/processing-tasks", json=task_body("App1", "DroneA"))
        await drone_a.wait_type("processing_task", task_id=response.json()["task_id"])

        def both_with_load(drones: Drones) -> bool:
            return set(drones) == {"DroneA", "DroneB"} and drones["DroneA"]["tasks_held"] == 1

        # When each gateway is asked
        listings = [await listed_until(gateway, both_with_load) for gateway in cluster.gateways]

        # Then each lists both drones, each on its own gateway, with its capacity
        for drones in listings:
            assert drones["DroneA"]["gateway"] == name_of(gateway_a)
            assert drones["DroneB"]["gateway"] == name_of(gateway_b)
            assert (drones["DroneA"]["capacity"], drones["DroneB"]["capacity"]) == (2, 5)

        # And each serves the dashboard, its assets from the package
        for gateway in cluster.gateways:
            async with httpx.AsyncClient(base_url=gateway.base_url) as http:
                for path in ("/dashboard", "/dashboard/static/dashboard.js"):
                    assert (await http.get(path)).status_code == 200, (gateway.base_url, path)

        # When gateway A dies without a word
        gateway_a.kill9()

        # Then gateway B stops listing A's drone once its entry expires, and keeps its own
        remaining = await listed_until(gateway_b, lambda drones: "DroneA" not in drones)
        assert set(remaining) == {"DroneB"}
