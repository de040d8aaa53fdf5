"""The fault suite: 1,000 tasks over 20 drones and 5 applications, with drones dropping at
random, tasks timing out, cancellations and tasks outliving RabbitMQ's consumer_timeout, while
every service is killed with -9 in turn. The invariants hold at the end, and the figures of
each fault are printed (run with -s to see them)."""

import asyncio
import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.faults.workload import Workload, WorkloadReport, check_invariants
from tests.mongod import MongodServer, mongod_server
from tests.processes import Cluster, ServiceProcess
from tests.sim import SimApp, SimDrone

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]

APPS = 5
DRONES = 20
TASKS_PER_APP = 200
CONSUMER_TIMEOUT_MS = 5000


def task_options(long_tasks: bool):  # type: ignore[no-untyped-def]
    def options(n: int) -> dict[str, Any]:
        if n % 50 == 7:  # the drone never answers: times out max_attempts times
            return {"input_data": {"silent": True}, "timeout_s": 1.0}
        if n % 40 == 3:
            return {"cancel": True, "input_data": {"work_s": 0.5}}
        if long_tasks and n % 100 == 11:  # outlives RabbitMQ's shortened consumer_timeout
            return {"input_data": {"work_s": CONSUMER_TIMEOUT_MS / 1000 + 1.5}}
        return {"input_data": {"work_s": 0.02}}

    return options


def build_workload(urls: list[str]) -> Workload:
    def rotate(i: int) -> list[str]:
        return urls[i % len(urls) :] + urls[: i % len(urls)]

    drones = [
        SimDrone(
            rotate(i),
            f"SD{i}",
            capacity=1 + i % 3,
            drop_probability=0.03 if i % 4 == 0 else 0.0,
            seed=i,
        )
        for i in range(DRONES)
    ]
    apps = [SimApp(rotate(i), f"SA{i}") for i in range(APPS)]
    return Workload(urls, apps, drones, TASKS_PER_APP, submit_pause_s=0.01)


def _restart(service: ServiceProcess):  # type: ignore[no-untyped-def]
    async def fault() -> None:
        service.kill9()
        await service.start()

    return fault


def _rabbitmqctl(*args: str) -> str:
    rabbitmqctl = shutil.which("rabbitmqctl")
    assert rabbitmqctl is not None
    return subprocess.run([rabbitmqctl, *args], check=True, capture_output=True, text=True).stdout


@contextlib.contextmanager
def short_consumer_timeout(milliseconds: int) -> Iterator[None]:
    before = _rabbitmqctl("eval", "application:get_env(rabbit, consumer_timeout).").strip()
    _rabbitmqctl("eval", f"application:set_env(rabbit, consumer_timeout, {milliseconds}).")
    try:
        yield
    finally:
        if before.startswith("{ok,"):
            _rabbitmqctl("eval", f"application:set_env(rabbit, consumer_timeout, {before[4:-1]}).")
        else:
            _rabbitmqctl("eval", "application:unset_env(rabbit, consumer_timeout).")


async def restart_rabbitmq() -> None:
    try:
        await asyncio.to_thread(_rabbitmqctl, "stop_app")
    finally:
        await asyncio.to_thread(_rabbitmqctl, "start_app")


async def _run(
    workload: Workload,
    faults: list[tuple[str, Any]],
    base_url: str,
    title: str,
    services: list[ServiceProcess],
) -> None:
    report = WorkloadReport()
    workload.start()
    submitting = asyncio.create_task(
        workload.submit_all(task_options(long_tasks=title == "distributed"))
    )
    await workload.wait_progress(0)
    await workload.inject(faults, report)
    await submitting
    missing = await workload.finish(timeout_s=180)
    if any(missing.values()):
        stacks = [await service.task_stacks() for service in services]
        pytest.fail(f"tasks never finished: {missing}\nwhere services wait:\n{''.join(stacks)}")
    await check_invariants(workload, base_url, report)
    print("\n".join(["", f"{title} fault suite:", *report.lines()]))
    assert report.by_error_code["max_attempts"] >= 1, "the silent tasks should have failed"
    assert report.by_status["cancelled"] >= 1


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[ServiceProcess]:
    data_dir = tmp_path / "data"
    env = {
        "DRONEFLOW_DATA_DIR": str(data_dir),
        "DRONEFLOW_STORE_URL": f"sqlite:///{data_dir / 'droneflow.db'}",
        "DRONEFLOW_BROKER_URL": "memory://",
        "DRONEFLOW_SWEEP_INTERVAL_S": "0.25",
        "DRONEFLOW_LOG_LEVEL": "warning",
    }
    serve = ServiceProcess("serve", env, tmp_path)
    await serve.start()
    yield serve
    serve.ensure_dead()


async def test_fault_suite_embedded_survives_kill_9(embedded: ServiceProcess) -> None:
    workload = build_workload([embedded.ws_url])
    await _run(
        workload,
        [("kill -9 droneflow serve", _restart(embedded))],
        embedded.base_url,
        "embedded",
        [embedded],
    )


@pytest.mark.rabbitmq
@pytest.mark.distributed
@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl")
async def test_fault_suite_distributed_survives_kill_9_of_each_service_and_rabbitmq_restart(
    rabbitmq_url: str, cluster_factory: Any, store_env: dict[str, str]
) -> None:
    with short_consumer_timeout(CONSUMER_TIMEOUT_MS):
        cluster: Cluster = await cluster_factory(
            gateways=2, dispatchers=1, writers=1, DRONEFLOW_SWEEP_INTERVAL_S="0.25", **store_env
        )
        workload = build_workload(cluster.ws_urls)
        faults = [
            ("kill -9 gateway", _restart(cluster.gateways[0])),
            ("kill -9 dispatcher", _restart(cluster.dispatchers[0])),
            ("kill -9 result-writer", _restart(cluster.writers[0])),
            ("restart RabbitMQ", restart_rabbitmq),
        ]
        label = "distributed" + ("" if not store_env else ", MongoDB")
        await _run(workload, faults, cluster.gateways[1].base_url, label, cluster.services)


@pytest.mark.rabbitmq
@pytest.mark.distributed
@pytest.mark.skipif(
    not os.environ.get("DRONEFLOW_TEST_MONGOD"), reason="needs a mongod binary to kill"
)
async def test_fault_suite_distributed_survives_kill_9_of_mongod(cluster_factory: Any) -> None:
    """Routing stamps, claims and a drone's `processing` skip MongoDB's journal
    (deploy/OPERATIONS.md): a mongod killed mid-load loses the last of them, and the sweeps and
    the gateways' claim checks must repair every one: no task lost, no result stored twice."""
    with mongod_server(os.environ["DRONEFLOW_TEST_MONGOD"]) as mongod:
        url = urlunsplit(urlsplit(mongod.url)._replace(path=f"/df_{uuid.uuid4().hex[:8]}"))
        cluster: Cluster = await cluster_factory(
            gateways=2,
            dispatchers=1,
            writers=1,
            DRONEFLOW_SWEEP_INTERVAL_S="0.25",
            DRONEFLOW_STORE_URL=url,
        )
        workload = build_workload(cluster.ws_urls)
        kill = _kill_mongod_mid_load(workload, mongod)
        faults = [("kill -9 mongod", kill), ("kill -9 mongod again", kill), ("and again", kill)]
        title = "distributed, mongod killed"
        await _run(workload, faults, cluster.gateways[1].base_url, title, cluster.services)


def _kill_mongod_mid_load(workload: Workload, mongod: MongodServer):  # type: ignore[no-untyped-def]
    async def fault() -> None:
        # Killed once more tasks have finished, so that tasks stand at every step, not only
        # the first ones.
        await workload.wait_progress(workload.finals_seen() + 60)
        mongod.kill9()
        await asyncio.to_thread(mongod.start)

    return fault
