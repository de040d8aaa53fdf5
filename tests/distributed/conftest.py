import os
from collections.abc import Iterator

import pytest

from tests.conftest import skip_or_fail
from tests.mongod import MongodServer, mongod_server
from tests.rabbitmq_node import RabbitMQNode, available, private_rabbitmq

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def rabbitmq_node() -> Iterator[RabbitMQNode]:
    """A private RabbitMQ node for the tests that stop, restart or alarm it: one per module."""
    if not os.environ.get("DRONEFLOW_TEST_RABBITMQ_URL"):
        pytest.skip(
            "RabbitMQ fault tests run with the RabbitMQ tests (DRONEFLOW_TEST_RABBITMQ_URL)"
        )
    if not available():
        skip_or_fail("RabbitMQ fault tests need rabbitmq-server and rabbitmqctl to start a node")
    with private_rabbitmq() as node:
        yield node


@pytest.fixture
def mongod() -> Iterator[MongodServer]:
    """A mongod of the test's own, to kill and restart (the session's one must stay up for the
    other tests)."""
    binary = os.environ.get("DRONEFLOW_TEST_MONGOD")
    if not binary:
        pytest.skip("mongod fault tests need DRONEFLOW_TEST_MONGOD (a mongod binary)")
    with mongod_server(binary) as server:
        yield server
