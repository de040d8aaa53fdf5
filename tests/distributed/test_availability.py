"""Issue 11: while RabbitMQ or the store is away, every request is answered within 5 s (200,
503 or 429), tasks are still taken while only RabbitMQ is away, every accepted task ends exactly
once, and service is normal within 2 s of the dependency's return. Issue 10: meanwhile every
service's /readyz answers 503 naming the dependency, and 200 once it is back.

The RabbitMQ faults are applied to a private node started for this module, never to the shared
one; the store fault to a mongod started for its test."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from tests.e2e.clients import WsClient, result_message, task_body
from tests.mongod import MongodServer
from tests.processes import Cluster, cluster_env
from tests.rabbitmq_node import RabbitMQNode
from tests.scrape import wait_status
from tests.sim import SimDrone
from tests.steady_load import (
    ACCEPTED,
    REFUSED,
    SteadyLoad,
    duplicated_results,
    summary,
    wait_all_terminal,
)

pytestmark = [pytest.mark.distributed, pytest.mark.rabbitmq]

ANSWER_BOUND_S = 5.0
RECOVERY_BOUND_S = 2.0
OUTAGE_S = 4.0
AFTER_S = 4.0
READY_AGAIN_TIMEOUT_S = 30.0


@pytest.fixture
async def outage_cluster(
    rabbitmq_node: RabbitMQNode, tmp_path: Path
) -> AsyncIterator[Callable[..., object]]:
    clusters: list[Cluster] = []

    async def make(**extra: str) -> Cluster:
        env = cluster_env(rabbitmq_node.url, tmp_path, DRONEFLOW_LOG_LEVEL="info", **extra)
        cluster = Cluster.of(env, tmp_path / "logs")
        clusters.append(cluster)
        await cluster.start()
        return cluster

    yield make
    for cluster in clusters:
        cluster.stop()


async def _through_outage(
    cluster: Cluster,
    go_away: Callable[[], None],
    come_back: Callable[[], None],
    while_away: Callable[[], Awaitable[None]] | None = None,
) -> tuple[SteadyLoad, float, float]:
    """Runs drones and a steady load; takes the dependency away for OUTAGE_S. Returns the load
    and the moments the dependency went away and was back (ready again)."""
    gateway = cluster.gateways[0]
    drones = [
        SimDrone([gateway.ws_url], f"OD{i}", capacity=4, work_s=0.02, seed=i) for i in range(5)
    ]
    load = SteadyLoad(
        gateway.base_url,
        gateway.ws_url,
        f"OA{uuid.uuid4().hex[:6]}",
        [d.drone_id for d in drones],
        rest_per_s=20,
        ws_per_s=10,
    )
    drones_stop, load_stop = asyncio.Event(), asyncio.Event()
    runners = [asyncio.create_task(d.run(drones_stop)) for d in drones]
    loading = asyncio.create_task(load.run(load_stop))
    try:
        async with asyncio.timeout(30):
            while len(load.accepted_ids()) < 10:  # noqa: ASYNC110 (counts kept by the load)
                await asyncio.sleep(0.05)
        away_at = time.monotonic()
        await asyncio.to_thread(go_away)
        if while_away is not None:
            await while_away()
        # The outage's length is the point of the test, not a wait for something to happen.
        await asyncio.sleep(max(0.0, away_at + OUTAGE_S - time.monotonic()))
        await asyncio.to_thread(come_back)
        back_at = time.monotonic()
        await asyncio.sleep(AFTER_S)
    finally:
        load_stop.set()
        await loading
    missing = await wait_all_terminal(gateway.base_url, load.accepted_ids(), timeout_s=60)
    duplicated = await duplicated_results(gateway.base_url, load.drone_ids)
    drones_stop.set()
    await asyncio.gather(*runners, return_exceptions=True)
    print(f"\n{summary(load, back_at)}")
    assert missing == [], f"accepted tasks not terminal: {missing[:10]}"
    assert duplicated == 0
    return load, away_at, back_at


def _assert_answered_in_bounds(load: SteadyLoad, back_at: float) -> None:
    outcomes = {a.outcome for a in load.answers}
    assert outcomes <= ACCEPTED | REFUSED, outcomes
    slowest = max(a.latency_s for a in load.answers)
    assert slowest < ANSWER_BOUND_S, slowest
    normal_from = back_at + RECOVERY_BOUND_S
    late = load.sent_between(normal_from, float("inf"))
    assert late, "no request was sent after the recovery bound"
    assert all(a.outcome in ACCEPTED for a in late), [a for a in late if a.outcome not in ACCEPTED]


@pytest.mark.timeout(120)
async def test_tasks_are_taken_through_a_rabbitmq_memory_alarm(
    outage_cluster: Callable[..., object], rabbitmq_node: RabbitMQNode
) -> None:
    cluster: Cluster = await outage_cluster()  # type: ignore[misc]
    try:
        load, away_at, back_at = await _through_outage(
            cluster, rabbitmq_node.raise_memory_alarm, rabbitmq_node.clear_memory_alarm
        )
    finally:
        rabbitmq_node.clear_memory_alarm()
    _assert_answered_in_bounds(load, back_at)
    during = load.sent_between(away_at, away_at + OUTAGE_S)
    assert during and all(a.outcome in ACCEPTED for a in during)


@pytest.mark.timeout(120)
async def test_tasks_are_taken_while_rabbitmq_is_stopped(
    outage_cluster: Callable[..., object], rabbitmq_node: RabbitMQNode
) -> None:
    cluster: Cluster = await outage_cluster()  # type: ignore[misc]
    try:
        load, away_at, back_at = await _through_outage(
            cluster, rabbitmq_node.stop_app, rabbitmq_node.start_app
        )
    finally:
        rabbitmq_node.start_app()
    _assert_answered_in_bounds(load, back_at)
    during = load.sent_between(away_at, away_at + OUTAGE_S)
    assert during and all(a.outcome in ACCEPTED for a in during)


@pytest.mark.timeout(120)
async def test_readyz_of_every_service_is_503_naming_rabbitmq_while_it_is_stopped(
    outage_cluster: Callable[..., object], rabbitmq_node: RabbitMQNode
) -> None:
    cluster: Cluster = await outage_cluster()  # type: ignore[misc]
    readyz = [f"{service.base_url}/readyz" for service in cluster.services]
    async with httpx.AsyncClient(timeout=ANSWER_BOUND_S) as http:
        # Given a gateway, a dispatcher and a result writer, all ready
        for url in readyz:
            assert (await http.get(url)).status_code == 200, url
        # When RabbitMQ stops, each says it is not ready, and why
        await asyncio.to_thread(rabbitmq_node.stop_app)
        try:
            for url in readyz:
                away = await wait_status(http, url, 503, READY_AGAIN_TIMEOUT_S)
                assert away.json()["rabbitmq"] == "unavailable", url
                assert away.json()["store"] == "ok", url
                assert away.json()["reason"].startswith("rabbitmq "), url
        finally:
            await asyncio.to_thread(rabbitmq_node.start_app)
        # Then each is ready again once it is back
        for url in readyz:
            back = await wait_status(http, url, 200, READY_AGAIN_TIMEOUT_S)
            assert back.json()["rabbitmq"] == "ok" and "reason" not in back.json(), url


@pytest.mark.mongodb
@pytest.mark.timeout(120)
async def test_requests_fail_fast_while_mongod_is_down(
    outage_cluster: Callable[..., object], mongod: MongodServer
) -> None:
    database = f"droneflow_outage_{uuid.uuid4().hex[:8]}"
    url = urlunsplit(urlsplit(mongod.url)._replace(path=f"/{database}"))
    cluster: Cluster = await outage_cluster(DRONEFLOW_STORE_URL=url)  # type: ignore[misc]
    gateway = cluster.gateways[0]

    async def not_ready() -> None:
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=ANSWER_BOUND_S) as http:
            readyz = await http.get("/readyz")
            assert readyz.status_code == 503 and readyz.json()["store"] == "unavailable"
            assert readyz.json()["reason"].startswith("store ")

    load, away_at, back_at = await _through_outage(
        cluster, mongod.kill9, mongod.start, while_away=not_ready
    )
    _assert_answered_in_bounds(load, back_at)
    async with httpx.AsyncClient(base_url=gateway.base_url) as http:
        assert (await http.get("/readyz")).status_code == 200
        metrics = (await http.get("/metrics")).text
    assert 'droneflow_dependency_refusals_total{dependency="store",outcome="refused"}' in metrics
    during = load.sent_between(away_at + RECOVERY_BOUND_S, away_at + OUTAGE_S)
    assert during and all(a.outcome in REFUSED for a in during)


@pytest.mark.timeout(90)
async def test_a_drone_result_sent_while_rabbitmq_is_stopped_is_asked_again_and_kept_once(
    outage_cluster: Callable[..., object], rabbitmq_node: RabbitMQNode
) -> None:
    cluster: Cluster = await outage_cluster()  # type: ignore[misc]
    gateway = cluster.gateways[0]
    async with (
        httpx.AsyncClient(base_url=gateway.base_url) as http,
        WsClient(f"{gateway.ws_url}/ws/drone/RD1") as drone,
    ):
        # Given a drone holding a task
        task_id = (await http.post("/api/processing-tasks", json=task_body("RA1", "RD1"))).json()[
            "task_id"
        ]
        await drone.wait_type("processing_task", task_id=task_id)
        # When it reports the result while RabbitMQ is stopped
        await asyncio.to_thread(rabbitmq_node.stop_app)
        try:
            await drone.send(result_message(task_id, "RD1"))
            # Then it is told to send it again, naming the task
            asked = await drone.wait_type("error", code="unavailable", task_id=task_id)
        finally:
            await asyncio.to_thread(rabbitmq_node.start_app)
        assert asked["message_type"] == "processing_result"
        # And sent again once RabbitMQ is back, the result is stored, once
        async with asyncio.timeout(30):
            while (await http.get(f"/api/processing-tasks/{task_id}")).json()[
                "status"
            ] != "completed":
                await drone.send(result_message(task_id, "RD1"))
                await asyncio.sleep(0.5)
        results = (await http.get("/api/processing-results/drone/RD1")).json()["results"]
        assert [r["task_id"] for r in results] == [task_id]
