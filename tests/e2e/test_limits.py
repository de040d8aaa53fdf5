"""Limits on what one application or socket may ask of a gateway: submission rate, pending
tasks, live sockets per id and frames per second. Each answers with a clear error, another
client is still served, and every task accepted before is delivered and completed."""

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.e2e.clients import WsClient, result_message, task_body
from tests.e2e.conftest import Server

StartServer = Callable[..., Awaitable[Server]]


async def submit(http: httpx.AsyncClient, app_id: str, drone_id: str = "D1") -> httpx.Response:
    return await http.post("/api/processing-tasks", json=task_body(app_id, drone_id))


async def completes(server: Server, drone_id: str, task_ids: list[str]) -> None:
    """Every accepted task reaches its drone, and its result ends it."""
    async with WsClient(server.drone_ws(drone_id, capacity=4)) as drone:
        for task_id in task_ids:
            await drone.wait_type("processing_task", task_id=task_id)
            await drone.send(result_message(task_id, drone_id))
        await drone.roundtrip_ping()
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        for task_id in task_ids:
            task = (await http.get(f"/api/processing-tasks/{task_id}")).json()
            assert task["status"] == "completed", task


def ws_task(request_id: str, drone_id: str = "D1") -> dict[str, Any]:
    data = task_body("ignored", drone_id)
    del data["app_id"]
    return {"type": "processing_task", "request_id": request_id, "data": data}


async def test_rest_submissions_over_the_rate_get_429_with_retry_after(
    server_factory: StartServer,
) -> None:
    server = await server_factory(task_rate_per_s=0.5, task_burst=2)
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        accepted = [await submit(http, "Greedy") for _ in range(2)]
        refused = await submit(http, "Greedy")
        other = await submit(http, "Polite")

    assert [r.status_code for r in accepted] == [200, 200]
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["code"] == "rate_limited"
    assert refused.json()["retry_after"] > 0
    assert other.status_code == 200
    await completes(server, "D1", [r.json()["task_id"] for r in [*accepted, other]])


async def test_ws_submissions_over_the_rate_get_a_rate_limited_error_frame(
    server_factory: StartServer,
) -> None:
    server = await server_factory(task_rate_per_s=0.5, task_burst=2)
    async with WsClient(server.app_ws("Greedy")) as app, WsClient(server.app_ws("Polite")) as other:
        for request_id in ("r1", "r2", "r3"):
            await app.send(ws_task(request_id))
        refusal = await app.wait_type("error", request_id="r3")
        await other.send(ws_task("p1"))
        polite = await other.wait_type("task_created", request_id="p1")
        await app.roundtrip_ping()  # the socket stays open and served
        created = [await app.wait_type("task_created", request_id=r) for r in ("r1", "r2")]

    assert refusal["code"] == "rate_limited"
    assert refusal["retry_after"] > 0
    assert refusal["message_type"] == "processing_task"
    assert len(app.of_type("task_created")) == 2
    await completes(server, "D1", [f["task_id"] for f in [*created, polite]])


@pytest.mark.parametrize("cache_s", [0.0, 60.0])
async def test_submissions_over_the_pending_limit_are_refused_too_many_pending(
    server_factory: StartServer, cache_s: float
) -> None:
    # Given an app with two tasks pending, the most it may have
    server = await server_factory(max_pending_per_app=2, pending_count_cache_s=cache_s)
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        accepted = [await submit(http, "Backlogged") for _ in range(2)]
        # When it submits a third, over REST and over its socket
        refused = await submit(http, "Backlogged")
        async with WsClient(server.app_ws("Backlogged")) as app:
            await app.send(ws_task("w1"))
            frame = await app.wait_type("error", request_id="w1")
        other = await submit(http, "Light")

    # Then both are refused, another app is not, and the accepted tasks complete
    assert [r.status_code for r in accepted] == [200, 200]
    assert refused.status_code == 429
    assert refused.json()["code"] == "too_many_pending"
    assert frame["code"] == "too_many_pending"
    assert other.status_code == 200
    await completes(server, "D1", [r.json()["task_id"] for r in [*accepted, other]])


async def test_pending_limit_frees_up_once_the_store_shows_tasks_started(
    server_factory: StartServer,
) -> None:
    server = await server_factory(max_pending_per_app=1, pending_count_cache_s=0.0)
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        first = (await submit(http, "Backlogged")).json()["task_id"]
        assert (await submit(http, "Backlogged")).status_code == 429
        await completes(server, "D1", [first])
        again = await submit(http, "Backlogged")

    assert again.status_code == 200


async def test_sockets_beyond_the_per_id_limit_are_closed_1008_before_the_welcome(
    server_factory: StartServer,
) -> None:
    server = await server_factory(max_connections_per_identity=2)
    async with WsClient(server.app_ws("Many")) as first, WsClient(server.app_ws("Many")) as second:
        await first.wait_type("connection_established")
        await second.wait_type("connection_established")
        async with WsClient(server.app_ws("Many")) as third:
            assert await third.wait_closed() == 1008
            assert third.received == []
        async with WsClient(server.app_ws("Other")) as other:
            await other.roundtrip_ping()
        await first.roundtrip_ping()
    # Once they closed, the id may connect again.
    async with WsClient(server.app_ws("Many")) as later:
        await later.roundtrip_ping()


async def test_a_socket_over_the_frame_rate_gets_errors_then_is_closed_1008(
    server_factory: StartServer,
) -> None:
    server = await server_factory(ws_max_frames_per_s=5)
    async with WsClient(server.app_ws("Flood")) as app, WsClient(server.app_ws("Calm")) as other:
        await app.send(ws_task("before"))
        accepted = await app.wait_type("task_created", request_id="before")
        # When it sends far more frames than 5 a second
        for _ in range(60):
            await app.send({"type": "ping"})
        code = await app.wait_closed()
        await other.roundtrip_ping()

    # Then each frame over the limit got an error in its place, and the socket was closed 1008
    refusals = [f for f in app.received if f.get("type") == "error"]
    assert refusals
    assert {f["code"] for f in refusals} == {"rate_limited"}
    assert all(f["retry_after"] > 0 for f in refusals)
    assert code == 1008
    assert len(app.of_type("pong")) + len(refusals) <= 60
    await completes(server, "D1", [accepted["task_id"]])
