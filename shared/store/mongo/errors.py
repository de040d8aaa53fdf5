"""The adapter boundary for errors: no pymongo or bson exception leaves MongoTaskStore."""

import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from bson.errors import BSONError
from pymongo.errors import (
    ConnectionFailure,
    ExecutionTimeout,
    PyMongoError,
    WTimeoutError,
)

from shared.errors import StoreError, StoreUnavailable

P = ParamSpec("P")
T = TypeVar("T")


def translated(method: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """No pymongo exception leaves this package."""

    @functools.wraps(method)
    async def translating(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except PyMongoError as exc:
            raise translate(exc) from None
        except BSONError as exc:  # a document BSON cannot hold, e.g. a key with a NUL in it
            raise StoreError(f"MongoDB: {exc}") from None

    return translating


def translate(exc: PyMongoError) -> StoreError:
    # ConnectionFailure covers AutoReconnect, NetworkTimeout, NotPrimaryError and
    # ServerSelectionTimeoutError; the labels mark what the server itself calls retryable.
    if (
        isinstance(exc, ConnectionFailure | ExecutionTimeout | WTimeoutError)
        or exc.has_error_label("RetryableWriteError")
        or exc.has_error_label("TransientTransactionError")
    ):
        return StoreUnavailable(f"MongoDB: {exc}")
    return StoreError(f"MongoDB: {exc}")
