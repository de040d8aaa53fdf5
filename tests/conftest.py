"""Fixtures for real backends. A backend that is not configured is skipped with the reason
printed; under CI=true a configured RabbitMQ that cannot be reached fails the run instead."""

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from shared.broker.queues import Queues
from tests.mongod import running_mongod
from tests.processes import Cluster, cluster_env

IN_CI = os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: this backend is required)")
    pytest.skip(reason)


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 2
        ):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """An AMQP URL on a fresh vhost that is deleted after the session.

    Falls back to the configured vhost when rabbitmqctl is not available; tests then rely on
    `unique_queues` prefixes to stay apart."""
    base = os.environ.get("DRONEFLOW_TEST_RABBITMQ_URL")
    if not base:
        pytest.skip(
            "RabbitMQ tests need DRONEFLOW_TEST_RABBITMQ_URL (e.g. amqp://guest:guest@127.0.0.1:5672/)"
        )
    if not _reachable(base, 5672):
        skip_or_fail(f"RabbitMQ at {base} is not reachable")
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None:
        yield base
        return
    parts = urlsplit(base)
    vhost = f"droneflow-test-{uuid.uuid4().hex[:12]}"
    user = parts.username or "guest"
    _rabbitmqctl(rabbitmqctl, "add_vhost", vhost)
    _rabbitmqctl(rabbitmqctl, "set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    try:
        yield urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))
    finally:
        subprocess.run([rabbitmqctl, "delete_vhost", vhost], check=False, capture_output=True)


def _rabbitmqctl(rabbitmqctl: str, *args: str, tries: int = 5) -> None:
    """rabbitmqctl starts an Erlang VM per call, which can fail on a loaded machine while the
    node itself is fine: try again, and say what it printed if it keeps failing."""
    for attempt in range(1, tries + 1):
        done = subprocess.run([rabbitmqctl, *args], capture_output=True, text=True, check=False)
        if done.returncode == 0 or "already exists" in done.stderr:
            return
        if attempt == tries:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stdout}{done.stderr}")
        time.sleep(attempt)


@pytest.fixture
def unique_queues() -> Queues:
    """Queue names no other test (or earlier run) uses."""
    return Queues(prefix=f"t{uuid.uuid4().hex[:10]}")


def _docker_engine_available() -> bool:
    """Ask the engine's /_ping directly: the Docker SDK leaks its socket when the ping fails."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    parts = urlsplit(host)
    try:
        if parts.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX)
        else:
            sock = socket.socket(socket.AF_INET)
        with sock:
            sock.settimeout(2)
            if parts.scheme == "unix":
                sock.connect(parts.path)
            else:
                sock.connect((parts.hostname or "127.0.0.1", parts.port or 2375))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status_line = sock.recv(1024).split(b"\r\n", 1)[0]
            return b" 200" in status_line
    except OSError:
        return False


@pytest.fixture(scope="session")
def mongodb_url() -> Iterator[str]:
    """In this order: DRONEFLOW_TEST_MONGODB_URL; a mongod started from the binary that
    DRONEFLOW_TEST_MONGOD names (`.ci/run` fetches one); a testcontainers MongoDB if a Docker
    engine runs; else skip, since MongoDB is optional."""
    url = os.environ.get("DRONEFLOW_TEST_MONGODB_URL")
    if url:
        yield url
        return
    binary = os.environ.get("DRONEFLOW_TEST_MONGOD")
    if binary:
        # Configured, so a server that will not start is a failure, not a reason to skip.
        with running_mongod(binary) as started:
            yield started
        return
    if not _docker_engine_available():
        pytest.skip(
            "MongoDB tests need DRONEFLOW_TEST_MONGODB_URL, DRONEFLOW_TEST_MONGOD (a mongod "
            "binary) or a running Docker engine (testcontainers); none is available"
        )
    from testcontainers.mongodb import MongoDbContainer

    with MongoDbContainer("mongo:7") as container:
        yield container.get_connection_url()


@pytest.fixture(params=["sqlite", pytest.param("mongodb", marks=pytest.mark.mongodb)])
def store_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings that put a cluster on each store: the shared SQLite file cluster_env sets up, or
    a fresh MongoDB database (dropped with the server at the end of the session)."""
    if request.param == "sqlite":
        return {}
    parts = urlsplit(request.getfixturevalue("mongodb_url"))
    database = f"droneflow_cluster_{uuid.uuid4().hex[:12]}"
    return {"DRONEFLOW_STORE_URL": urlunsplit(parts._replace(path=f"/{database}"))}


@pytest.fixture
async def cluster_factory(rabbitmq_url: str, tmp_path: Path) -> AsyncIterator[object]:
    """Gateways, dispatchers and result writers as separate processes on the local RabbitMQ
    (a fresh vhost per session, a unique queue prefix per cluster) and one shared SQLite file."""
    clusters: list[Cluster] = []

    async def make(
        gateways: int = 2, dispatchers: int = 1, writers: int = 1, **extra: str
    ) -> Cluster:
        env = cluster_env(rabbitmq_url, tmp_path, **extra)
        cluster = Cluster.of(env, tmp_path / "logs", gateways, dispatchers, writers)
        clusters.append(cluster)
        await cluster.start()
        return cluster

    yield make
    for cluster in clusters:
        cluster.stop()
