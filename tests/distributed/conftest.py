"""A distributed droneflow: gateways, dispatchers and result writers as separate processes on
the local RabbitMQ (a fresh vhost per session, a unique queue prefix per test) and one shared
SQLite file."""

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.processes import ServiceProcess

pytestmark = pytest.mark.distributed


@dataclass
class Cluster:
    gateways: list[ServiceProcess]
    dispatchers: list[ServiceProcess]
    writers: list[ServiceProcess]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def services(self) -> list[ServiceProcess]:
        return [*self.gateways, *self.dispatchers, *self.writers]

    @property
    def ws_urls(self) -> list[str]:
        return [g.ws_url for g in self.gateways]

    async def start(self) -> None:
        for service in self.services:
            await service.start()

    def stop(self) -> None:
        for service in self.services:
            try:
                service.terminate()
            finally:
                service.ensure_dead()


def cluster_env(rabbitmq_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "DRONEFLOW_BROKER_URL": rabbitmq_url,
        "DRONEFLOW_STORE_URL": f"sqlite:///{tmp_path / 'shared.db'}",
        "DRONEFLOW_QUEUE_PREFIX": f"t{uuid.uuid4().hex[:10]}",
        "DRONEFLOW_SWEEP_INTERVAL_S": "0.5",
        "DRONEFLOW_DISPATCH_GRACE_S": "2",
        "DRONEFLOW_LOG_LEVEL": "warning",
        **extra,
    }


@pytest.fixture
async def cluster_factory(rabbitmq_url: str, tmp_path: Path) -> AsyncIterator[object]:
    clusters: list[Cluster] = []

    async def make(gateways: int = 2, dispatchers: int = 1, writers: int = 1, **extra: str) -> Cluster:
        env = cluster_env(rabbitmq_url, tmp_path, **extra)
        logs = tmp_path / "logs"
        logs.mkdir(exist_ok=True)
        cluster = Cluster(
            gateways=[ServiceProcess("gateway", env, logs, f"gateway{i}") for i in range(gateways)],
            dispatchers=[ServiceProcess("dispatcher", env, logs, f"dispatcher{i}") for i in range(dispatchers)],
            writers=[ServiceProcess("result-writer", env, logs, f"writer{i}") for i in range(writers)],
            env=env,
        )
        clusters.append(cluster)
        await cluster.start()
        return cluster

    yield make
    for cluster in clusters:
        cluster.stop()
