"""A service started while RabbitMQ or its store is unreachable (as during a RabbitMQ restart)
keeps trying, one line per attempt, and serves once they are back, without being restarted."""

import asyncio
import os
import signal
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests.e2e.clients import WsClient, free_port, result_message, task_body
from tests.processes import Cluster, ServiceProcess, cluster_env
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
        # Stopped while the proxy still forwards (this loop runs it): after it, the writer's
        # goodbye to RabbitMQ went unanswered until its shutdown budget ran out.
        assert await asyncio.to_thread(writer.terminate) == 0


async def test_a_dispatcher_whose_store_is_unreachable_says_so_at_each_attempt(
    rabbitmq_url: str, tmp_path: Path
) -> None:
    store_url = f"mongodb://127.0.0.1:{free_port()}/droneflow"
    env = cluster_env(rabbitmq_url, tmp_path, DRONEFLOW_STORE_URL=store_url)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "droneflow.cli", "dispatcher",
        env={**os.environ, **env, "DRONEFLOW_LOG_LEVEL": "info"},
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    attempts: list[str] = []
    try:
        # Given a dispatcher that reaches RabbitMQ but not MongoDB, twice
        async with asyncio.timeout(RETRY_TIMEOUT_S):
            while len(attempts) < 2:
                line = (await process.stderr.readline()).decode()
                assert line, f"the dispatcher exited: {attempts}"
                if "attempt" in line:
                    attempts.append(line)
    finally:
        # When it is stopped
        process.send_signal(signal.SIGTERM)
        await process.stderr.read()
        exit_code = await process.wait()

    # Then each attempt named the store, briefly, on one line
    for number, line in enumerate(attempts, 1):
        assert f"store at {store_url} (DRONEFLOW_STORE_URL) unavailable: MongoDB" in line
        assert f"attempt {number} failed" in line
        assert len(line) < 500  # not pymongo's whole topology description
    assert exit_code == 0
