"""kill -9 and restart each service in turn, then restart RabbitMQ, during a run of a few
hundred tasks: nothing is lost, nothing is stored twice, every app hears every final state."""

import asyncio
import shutil
import subprocess

import pytest

from tests.faults.workload import Workload, WorkloadReport, check_invariants
from tests.processes import Cluster, ServiceProcess
from tests.sim import SimApp, SimDrone

pytestmark = [pytest.mark.distributed, pytest.mark.rabbitmq]


def _restart(service: ServiceProcess):  # type: ignore[no-untyped-def]
    async def fault() -> None:
        service.kill9()
        await service.start()

    return fault


async def restart_rabbitmq() -> None:
    rabbitmqctl = shutil.which("rabbitmqctl")
    assert rabbitmqctl is not None
    try:
        await asyncio.to_thread(
            subprocess.run, [rabbitmqctl, "stop_app"], check=True, capture_output=True
        )
    finally:
        await asyncio.to_thread(
            subprocess.run, [rabbitmqctl, "start_app"], check=True, capture_output=True
        )


@pytest.mark.timeout(600)
@pytest.mark.skipif(
    shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl to restart RabbitMQ"
)
async def test_cluster_survives_kill_9_of_every_service_and_a_rabbitmq_restart(
    cluster_factory: object,
) -> None:
    cluster: Cluster = await cluster_factory(gateways=2, dispatchers=1, writers=1)  # type: ignore[operator]
    urls = cluster.ws_urls
    drones = [
        SimDrone(urls[i % 2 :] + urls[: i % 2], f"FD{i}", capacity=1 + i % 3, work_s=0.02, seed=i)
        for i in range(6)
    ]
    apps = [SimApp(urls[i % 2 :] + urls[: i % 2], f"FA{i}") for i in range(3)]
    workload = Workload(urls, apps, drones, tasks_per_app=100, submit_pause_s=0.03)
    report = WorkloadReport()
    workload.start()
    submitting = asyncio.create_task(workload.submit_all())
    await workload.wait_progress(0)

    gateway, dispatcher, writer = cluster.gateways[0], cluster.dispatchers[0], cluster.writers[0]
    await workload.inject(
        [
            ("kill -9 gateway", _restart(gateway)),
            ("kill -9 dispatcher", _restart(dispatcher)),
            ("kill -9 result-writer", _restart(writer)),
            ("restart RabbitMQ", restart_rabbitmq),
        ],
        report,
    )
    await submitting
    missing = await workload.finish(timeout_s=120)

    assert missing == {app.app_id: set() for app in apps}
    await check_invariants(workload, cluster.gateways[1].base_url, report)
    print("\n".join(["", "distributed fault run:", *report.lines()]))
