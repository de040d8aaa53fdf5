"""The SDK against separate gateway, dispatcher and result-writer processes on RabbitMQ."""

import asyncio

import pytest

from droneflow.client import AppClient, TaskFailed
from tests.e2e.test_sdk import make_worker
from tests.processes import Cluster
from tests.sdk_workers import Gate, fast_backoff, running

pytestmark = pytest.mark.distributed


async def test_sdk_cluster_flow_and_gateway_kill_9(cluster_factory: object) -> None:
    cluster: Cluster = await cluster_factory(gateways=1)  # type: ignore[operator]
    gateway = cluster.gateways[0]
    gate = Gate()
    async with (
        running(make_worker(gateway.base_url, "SdkDrone", gate)),
        AppClient(gateway.base_url, app_id="SdkApp", backoff=fast_backoff()) as app,
    ):
        # A handler exception becomes TaskFailed
        failing = await app.submit(
            drone_id="SdkDrone", task_type="explode", input_data={"image_url": "x"}
        )
        with pytest.raises(TaskFailed) as failed:
            await failing.result(timeout=20)

        # A cancelled task ends cancelled
        doomed = await app.submit(drone_id="SdkDrone", task_type="gated", input_data={"n": 0})
        await asyncio.wait_for(gate.started.get(), 20)
        assert await doomed.cancel() is True
        assert await asyncio.wait_for(gate.cancelled.get(), 20) == doomed.task_id
        with pytest.raises(TaskFailed) as cancelled:
            await doomed.result(timeout=20)

        # Given a task in progress, its progress seen by the app
        handle = await app.submit(drone_id="SdkDrone", task_type="gated", input_data={"n": 1})
        await asyncio.wait_for(gate.started.get(), 20)
        updates = handle.updates()
        progress = await asyncio.wait_for(anext(updates), 20)

        # When the gateway both clients use is killed and restarted
        gateway.kill9()
        await gateway.start()
        # A submission made around the restart waits for the connection instead of failing
        second = await app.submit(drone_id="SdkDrone", task_type="gated", input_data={"n": 2})
        await asyncio.wait_for(gate.started.get(), 20)
        gate.opened.set()

        # Then each caller sees every change once: one progress, then one result
        results = [await h.result(timeout=30) for h in (handle, second)]
        seen_after_restart = [u.status async for u in updates]
        seen_by_second = [u.status async for u in second.updates()]

    assert failed.value.error_code == "drone_error"
    assert (cancelled.value.status, cancelled.value.error_code) == ("cancelled", "cancelled")
    assert progress.additional_data == {"progress": 50}
    assert seen_after_restart == ["completed"]
    assert seen_by_second == ["processing", "completed"]
    assert [r.result_data["echo"] for r in results] == [{"n": 1}, {"n": 2}]
    # and no handler ran twice
    assert gate.runs == [doomed.task_id, handle.task_id, second.task_id]
