"""`GET /api/drones` and `/api/applications` on an embedded server: who is connected, with
what load, and what waits for each drone."""

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from tests.e2e.clients import WsClient, task_body
from tests.e2e.conftest import Server

WAIT_S = 10.0


async def listed_until(
    http: httpx.AsyncClient, path: str, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The listing once `done` holds of it: presence is written when a socket opens or closes,
    so the next read after that write shows it."""
    async with asyncio.timeout(WAIT_S):
        while True:
            body: dict[str, Any] = (await http.get(path)).json()
            if done(body):
                return body
            await asyncio.sleep(0.05)


def drone(body: dict[str, Any], drone_id: str) -> dict[str, Any] | None:
    return next((d for d in body["drones"] if d["drone_id"] == drone_id), None)


async def test_drones_lists_a_connected_drone_with_its_load_and_queue(
    server: Server, http: httpx.AsyncClient
) -> None:
    # Given a drone of capacity 1 holding one task, with two more waiting for it
    async with WsClient(server.drone_ws("Drone7", capacity=1)) as socket:
        welcome = await socket.wait_type("connection_established")
        ids = [
            (await http.post("/api/processing-tasks", json=task_body("App1", "Drone7"))).json()[
                "task_id"
            ]
            for _ in range(3)
        ]
        await socket.wait_type("processing_task", task_id=ids[0])

        # When the fleet is listed
        body = await listed_until(
            http,
            "/api/drones",
            lambda b: (
                (d := drone(b, "Drone7")) is not None
                and d["tasks_held"] == 1
                and d["tasks_queued"] == 2
            ),
        )

        # Then it shows the drone, its capacity and this gateway
        listed = drone(body, "Drone7")
        assert listed is not None
        assert body["count"] == 1
        assert listed["capacity"] == 1
        assert listed["gateway"].endswith(f":{server.settings.port}")
        assert listed["connected_since"] <= listed["last_seen"]
        assert listed["connected_since"][:16] == welcome["timestamp"][:16]

    # And once the drone leaves, it is no longer listed
    await listed_until(http, "/api/drones", lambda b: b["count"] == 0)


async def test_drones_shows_a_reconnected_drone_once(
    server: Server, http: httpx.AsyncClient
) -> None:
    async with WsClient(server.drone_ws("DroneR", capacity=2)) as old:
        await old.wait_type("connection_established")
        async with WsClient(server.drone_ws("DroneR", capacity=3)) as new:
            await new.wait_type("connection_established")
            assert await old.wait_closed() == 4000

            body = await listed_until(
                http,
                "/api/drones",
                lambda b: [d["capacity"] for d in b["drones"]] == [3],
            )

    assert body["count"] == 1


async def test_applications_lists_connected_applications(
    server: Server, http: httpx.AsyncClient
) -> None:
    async with WsClient(server.app_ws("AppOnline")) as app:
        await app.wait_type("connection_established")

        body = await listed_until(http, "/api/applications", lambda b: b["count"] == 1)

        (listed,) = body["applications"]
        assert listed["app_id"] == "AppOnline"
        assert [g.rsplit(":", 1)[1] for g in listed["gateways"]] == [str(server.settings.port)]
    await listed_until(http, "/api/applications", lambda b: b["count"] == 0)


async def test_queues_answers_a_depth_for_each_shared_queue(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/queues")

    assert response.status_code == 200
    assert set(response.json()) == {"intake", "drone_events", "dead_letters"}
    assert all(isinstance(depth, int) for depth in response.json().values())
