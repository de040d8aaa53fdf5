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

        # Given a task in progress, when the gateway both clients use is killed and restarted
        handle = await app.submit(drone_id="SdkDrone", task_type="gated", input_data={"n": 1})
        await asyncio.wait_for(gate.started.get(), 20)
        progress = await asyncio.wait_for(anext(handle.updates()), 20)
        gateway.kill9()
        await gateway.start()
        gate.opened.set()

        # Then the result arrives once, after the progress, and the handler ran once
        result = await handle.result(timeout=30)

    assert failed.value.error_code == "drone_error"
    assert doomed.history[-1].status == "cancelled"
    assert result.result_data["echo"] == {"n": 1}
    assert progress.additional_data == {"progress": 50}
    assert [u.status for u in handle.history] == ["processing", "completed"]
    assert gate.runs == [doomed.task_id, handle.task_id]
