"""Delivery: capacity, priority order, owner-only notifications, offline apps, redelivery."""

import asyncio

import httpx

from tests.e2e.clients import WsClient, result_message, task_body
from tests.e2e.conftest import Server
from tests.e2e.metrics import counter, wait_counter


async def _create(http: httpx.AsyncClient, app_id: str, drone_id: str, priority: int) -> str:
    body = task_body(app_id, drone_id, priority=priority)
    response = await http.post("/api/processing-tasks", json=body)
    assert response.status_code == 200
    task_id: str = response.json()["task_id"]
    return task_id


async def _drain_one_at_a_time(drone: WsClient, drone_id: str, count: int) -> list[str]:
    """Receive `count` tasks, answering each before the next may arrive (capacity 1)."""
    order: list[str] = []
    for _ in range(count):
        frame = await drone.wait_for(
            lambda f: f.get("type") == "processing_task" and f["task_id"] not in order
        )
        assert len(drone.of_type("processing_task")) == len(order) + 1, "exceeded capacity 1"
        order.append(frame["task_id"])
        await drone.send(result_message(frame["task_id"], drone_id))
    return order


async def test_priority_order_across_a_mixed_backlog(
    server: Server, http: httpx.AsyncClient
) -> None:
    # Given a backlog of mixed priorities for an offline drone, all routed to its queue
    routed_before = await counter(http, "droneflow_tasks_routed")
    priorities = [1, 3, 5, 2, 1, 4, 5, 3, 2, 1, 4, 2]
    created = [(await _create(http, "App1", "PrioDrone", p), p) for p in priorities]
    await wait_counter(http, "droneflow_tasks_routed", routed_before + len(created))

    # When the drone connects with the default capacity of one
    async with WsClient(server.drone_ws("PrioDrone")) as drone:
        order = await _drain_one_at_a_time(drone, "PrioDrone", len(created))

    # Then it got them highest priority first, oldest first within a priority
    expected = [task_id for task_id, _ in sorted(created, key=lambda c: -c[1])]
    assert order == expected


async def test_pending_endpoint_lists_in_delivery_order(http: httpx.AsyncClient) -> None:
    priorities = [1, 5, 2, 5, 3]
    created = [(await _create(http, "App1", "ListDrone", p), p) for p in priorities]

    listed = (await http.get("/api/processing-tasks/drone/ListDrone/pending")).json()

    assert [t["task_id"] for t in listed["tasks"]] == [
        task_id for task_id, _ in sorted(created, key=lambda c: -c[1])
    ]
    assert all(t["status"] == "pending" for t in listed["tasks"])


async def test_new_critical_task_overtakes_a_low_priority_backlog(
    server: Server, http: httpx.AsyncClient
) -> None:
    routed_before = await counter(http, "droneflow_tasks_routed")
    backlog = [await _create(http, "App1", "BusyDrone", 1) for _ in range(5)]
    await wait_counter(http, "droneflow_tasks_routed", routed_before + 5)
    async with WsClient(server.drone_ws("BusyDrone")) as drone:
        first = await drone.wait_type("processing_task")
        # While the drone is busy with its first task, a critical one arrives
        critical = await _create(http, "App1", "BusyDrone", 5)
        await wait_counter(http, "droneflow_tasks_routed", routed_before + 6)
        await drone.send(result_message(first["task_id"], "BusyDrone"))
        second = await drone.wait_for(
            lambda f: f.get("type") == "processing_task" and f["task_id"] != first["task_id"]
        )
    assert first["task_id"] == backlog[0]
    assert second["task_id"] == critical


async def test_capacity_bounds_unfinished_tasks_per_drone(
    server: Server, http: httpx.AsyncClient
) -> None:
    routed_before = await counter(http, "droneflow_tasks_routed")
    ids = [await _create(http, "App1", "CapDrone", 2) for _ in range(5)]
    await wait_counter(http, "droneflow_tasks_routed", routed_before + 5)

    async with WsClient(server.drone_ws("CapDrone", capacity=3)) as drone:
        await drone.wait_for(lambda _: len(drone.of_type("processing_task")) == 3)
        await drone.roundtrip_ping()
        assert len(drone.of_type("processing_task")) == 3  # not a fourth while three are open
        await drone.send(result_message(drone.of_type("processing_task")[0]["task_id"], "CapDrone"))
        await drone.wait_for(lambda _: len(drone.of_type("processing_task")) == 4)
        await drone.roundtrip_ping()
        assert len(drone.of_type("processing_task")) == 4
    assert {f["task_id"] for f in drone.of_type("processing_task")} <= set(ids)


async def test_capacity_above_the_maximum_is_refused_with_1008(server: Server) -> None:
    too_many = server.settings.max_drone_capacity + 1
    async with WsClient(server.drone_ws("GreedyDrone", capacity=too_many)) as drone:
        assert await drone.wait_closed() == 1008
    assert drone.of_type("connection_established") == []


async def test_two_applications_never_see_each_others_traffic(
    server: Server, http: httpx.AsyncClient
) -> None:
    async with (
        WsClient(server.app_ws("AppA")) as app_a,
        WsClient(server.app_ws("AppB")) as app_b,
        WsClient(server.drone_ws("SharedDrone", capacity=4)) as drone,
    ):
        await app_a.send(
            {"type": "processing_task", "request_id": "a", "data": task_body("AppA", "SharedDrone")}
        )
        await app_b.send(
            {"type": "processing_task", "request_id": "b", "data": task_body("AppB", "SharedDrone")}
        )
        task_a = (await app_a.wait_type("task_created"))["task_id"]
        task_b = (await app_b.wait_type("task_created"))["task_id"]
        for task_id in (task_a, task_b):
            await drone.wait_type("processing_task", task_id=task_id)
            await drone.send(
                {"type": "task_status_update", "data": {"task_id": task_id, "status": "processing"}}
            )
            await drone.send(result_message(task_id, "SharedDrone"))
        await app_a.wait_type("processing_result_received", task_id=task_a)
        await app_b.wait_type("processing_result_received", task_id=task_b)
        await app_a.roundtrip_ping()
        await app_b.roundtrip_ping()

    assert {f.get("task_id") for f in app_a.received if "task_id" in f} == {task_a}
    assert {f.get("task_id") for f in app_b.received if "task_id" in f} == {task_b}


async def test_offline_application_gets_its_result_on_reconnect(
    server: Server, http: httpx.AsyncClient
) -> None:
    task_id = await _create(http, "SleepyApp", "Drone7", 3)
    async with WsClient(server.drone_ws("Drone7")) as drone:
        await drone.wait_type("processing_task", task_id=task_id)
        await drone.send(result_message(task_id, "Drone7"))
        await drone.roundtrip_ping()

    async with WsClient(server.app_ws("SleepyApp")) as app:
        received = await app.wait_type("processing_result_received", task_id=task_id)
    assert received["app_id"] == "SleepyApp"


async def test_drone_that_drops_gets_its_unfinished_tasks_again_on_reconnect(
    server: Server, http: httpx.AsyncClient
) -> None:
    ids = {await _create(http, "App1", "FlakyDrone", 3) for _ in range(2)}
    async with WsClient(server.drone_ws("FlakyDrone", capacity=2)) as drone:
        await drone.wait_for(lambda _: len(drone.of_type("processing_task")) == 2)
    # The connection dropped with both tasks unfinished
    async with WsClient(server.drone_ws("FlakyDrone", capacity=2)) as drone:
        await drone.wait_for(lambda _: len(drone.of_type("processing_task")) == 2)
        again = drone.of_type("processing_task")
    assert {f["task_id"] for f in again} == ids
    # The same deliveries sent again: a dropped link is not an attempt
    assert all(f["attempt"] == 1 and f["resumed"] is True for f in again)
    for task_id in ids:
        task = (await http.get(f"/api/processing-tasks/{task_id}")).json()
        assert task["attempts"] == 1


async def test_newer_connection_of_a_drone_supersedes_the_older(server: Server) -> None:
    async with WsClient(server.drone_ws("TwinDrone")) as old:
        await old.wait_type("connection_established")
        async with WsClient(server.drone_ws("TwinDrone")) as new:
            await new.wait_type("connection_established")
            assert await old.wait_closed() == 4000
            await new.roundtrip_ping()


async def test_result_reaches_app_connected_only_after_submission(
    server: Server, http: httpx.AsyncClient
) -> None:
    async with WsClient(server.app_ws("LateApp")) as app:
        await app.send(
            {"type": "processing_task", "request_id": 1, "data": task_body("LateApp", "D77")}
        )
        task_id = (await app.wait_type("task_created"))["task_id"]
    async with WsClient(server.drone_ws("D77")) as drone:
        await drone.wait_type("processing_task", task_id=task_id)
        await drone.send(
            {
                "type": "task_status_update",
                "data": {
                    "task_id": task_id,
                    "status": "processing",
                    "additional_data": {"progress": 10},
                },
            }
        )
        await drone.send(result_message(task_id, "D77"))
        await drone.roundtrip_ping()
    async with WsClient(server.app_ws("LateApp")) as app:
        await app.wait_type("processing_result_received", task_id=task_id)
        kinds = [f["type"] for f in app.received if f.get("task_id") == task_id]
    # Notifications for one task arrive in the order they happened
    assert kinds == ["task_status_update", "processing_result_received"]


async def test_many_tasks_all_complete(server: Server, http: httpx.AsyncClient) -> None:
    async with WsClient(server.app_ws("BulkApp")) as app:
        drones = [WsClient(server.drone_ws(f"Bulk{i}", capacity=2)) for i in range(3)]
        for drone in drones:
            await drone.connect()

        async def work(drone: WsClient, drone_id: str) -> None:
            done: set[str] = set()
            while True:
                frame = await drone.wait_for(
                    lambda f: f.get("type") == "processing_task" and f["task_id"] not in done
                )
                done.add(frame["task_id"])
                await drone.send(result_message(frame["task_id"], drone_id))

        workers = [asyncio.create_task(work(d, f"Bulk{i}")) for i, d in enumerate(drones)]
        for n in range(60):
            await app.send(
                {
                    "type": "processing_task",
                    "data": task_body("BulkApp", f"Bulk{n % 3}", priority=1 + n % 5),
                }
            )
        await app.wait_for(
            lambda _: len(app.of_type("processing_result_received")) == 60, timeout_s=30
        )
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for drone in drones:
            await drone.close()
    assert len({f["task_id"] for f in app.of_type("processing_result_received")}) == 60
