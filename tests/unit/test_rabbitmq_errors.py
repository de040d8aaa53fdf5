"""The RabbitMQ adapter turns every failure of a connection into BrokerUnavailable, which the
services retry, including the ones its driver raises in unusual forms."""

import aio_pika
import pytest

from shared.broker.rabbitmq.errors import translated_errors
from shared.errors import BrokerError, BrokerUnavailable


@pytest.mark.parametrize(
    "raised",
    [
        # aiormq's connect() when the server hangs up during the handshake (a stopping node)
        StopAsyncIteration(),
        # aio-pika's channel() while its robust connection is down
        RuntimeError("<Connection: amqp://…> closed"),
        ConnectionRefusedError(111, "Connection refused"),
        aio_pika.exceptions.AMQPConnectionError("Server connection reset"),
    ],
)
def test_connection_failures_become_broker_unavailable(raised: Exception) -> None:
    with pytest.raises(BrokerUnavailable), translated_errors():
        raise raised


def test_a_refused_redeclaration_is_permanent() -> None:
    with pytest.raises(BrokerError) as caught, translated_errors():
        raise aio_pika.exceptions.ChannelPreconditionFailed("PRECONDITION_FAILED")
    assert not isinstance(caught.value, BrokerUnavailable)


def test_a_bare_exception_from_a_closing_connection_is_broker_unavailable() -> None:
    # aiormq rejects an ack or cancel waiting on a connection that closes with no reason given
    # with `Exception` itself (FutureStore.reject_all); a handler that let it through
    # dead-lettered its task message and left its drone without a consumer.
    with pytest.raises(BrokerUnavailable), translated_errors():
        raise Exception()


def test_a_bug_is_not_mistaken_for_an_outage() -> None:
    with pytest.raises(ValueError, match="a bug"), translated_errors():
        raise ValueError("a bug")
