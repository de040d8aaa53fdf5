"""The driver's errors and their translation into the DroneflowError tree."""

from collections.abc import Iterator
from contextlib import contextmanager

import aio_pika

from shared.errors import BrokerError, BrokerUnavailable

# TimeoutError is an OSError; ChannelInvalidStateError (a RuntimeError) means "channel closed".
# While a robust connection is down, aio-pika raises a bare RuntimeError ("<Connection …>
# closed") from channel(): it is the same outage and must reach callers as BrokerUnavailable,
# or their retry loops die with it. aiormq raises StopAsyncIteration from connect() when the
# server closes the socket during the handshake, as a node that is stopping or booting does.
DRIVER_ERRORS: tuple[type[Exception], ...] = (
    aio_pika.exceptions.AMQPError,
    aio_pika.exceptions.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    RuntimeError,
    StopAsyncIteration,
)


def is_driver_error(error: BaseException) -> bool:
    """Whether `error` is the connection failing. aiormq also rejects what waits on a connection
    that closes with no reason given (a basic.ack or basic.cancel being written) with a bare
    `Exception` (`FutureStore.reject_all`): the same outage, in the most unusual form."""
    return isinstance(error, DRIVER_ERRORS) or type(error) is Exception


# An error a retry cannot fix: a queue redeclared with other arguments.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (aio_pika.exceptions.ChannelPreconditionFailed,)


@contextmanager
def translated_errors() -> Iterator[None]:
    """No driver exception leaves the adapter (the port's contract); dramatiq does the same."""
    try:
        yield
    except PERMANENT_ERRORS as e:
        raise BrokerError(f"RabbitMQ refused: {e}") from None
    except Exception as e:
        if not is_driver_error(e):
            raise
        raise BrokerUnavailable(f"RabbitMQ: {type(e).__name__}: {e}") from None
