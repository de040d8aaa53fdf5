"""A service started while RabbitMQ is unreachable (as during a RabbitMQ restart) keeps trying,
and serves once RabbitMQ is back, without being restarted."""

import asyncio
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests.e2e.clients import WsClient, result_message, task_body
from tests.processes import Cluster, ServiceProcess
from tests.tcp_proxy import LateTcpProxy

RETRY_TIMEOUT_S = 30.0


async def test_result_writer_started_while_rabbitmq_is_down_serves_once_it_is_up(
    cluster_factory: object, tmp_path: Path
) -> None:
    cluster: Cluster = await cluster_factory(gateways=1, writers=0)  # type: ignore[operator]
    amqp = urlsplit(cluster.env["DRONEFLOW_BROKER_URL"])
    async with LateTcpProxy(amqp.hostname or "127.0.0.1", amqp.port or 5672) as proxy:
        netloc = f"{amqp.netloc.rsplit(':', 1)[0]}:{proxy.port}"
        writer = ServiceProcess(
            "result-writer",
            {**cluster.env, "DRONEFLOW_BROKER_URL": urlunsplit(amqp._replace(netloc=netloc))},
            tmp_path,
            "late-writer",
        )
        cluster.writers.append(writer)  # stopped with the cluster

        # Given a result writer started while RabbitMQ turned it away, twice
        await writer.start()
        async with asyncio.timeout(RETRY_TIMEOUT_S):
            await proxy.turned_away_at_least(2)
        assert writer.process is not None and writer.process.poll() is None

        # When RabbitMQ lets it in
        proxy.open()

        # Then the same process stores and announces results
        gateway = cluster.gateways[0]
        async with (
            WsClient(f"{gateway.ws_url}/ws/application/LateApp") as app,
            WsClient(f"{gateway.ws_url}/ws/drone/LateDrone") as drone,
        ):
            await app.send(
                {
                    "type": "processing_task",
                    "request_id": "r",
                    "data": task_body("LateApp", "LateDrone"),
                }
            )
            task_id = (await app.wait_type("task_created"))["task_id"]
            await drone.wait_type("processing_task", task_id=task_id)
            await drone.send(result_message(task_id, "LateDrone"))
            await app.wait_type("processing_result_received", task_id=task_id)
        assert writer.starts == 1 and writer.process.poll() is None
