"""The only place adapters are chosen: from the URLs in Settings to a Broker and a TaskStore."""

from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from shared.broker import Broker
from shared.errors import ConfigurationError
from shared.settings import Settings
from shared.store import TaskStore


def build_broker(settings: Settings) -> AbstractAsyncContextManager[Broker]:
    scheme = urlsplit(settings.broker_url).scheme
    if scheme == "memory":
        from shared.broker.memory import InMemoryBroker

        return InMemoryBroker(settings.queues)
    if scheme in ("amqp", "amqps"):
        from shared.broker.rabbitmq import RabbitMQBroker

        return RabbitMQBroker(
            settings.broker_url, settings.queues, publish_timeout_s=settings.publish_timeout_s
        )
    raise ConfigurationError(
        f"DRONEFLOW_BROKER_URL: unsupported scheme {scheme!r} (use memory:// or amqp://)"
    )


INLINE_BATCH_MAX: Final = 16
"""Store calls of one event-loop iteration that `serve` runs on the loop's own thread when
SQLite's worker is idle (SQLiteTaskStore's inline_max): the lone task's path of one in flight,
and a server at half its peak, whose batches are small."""


def build_store(
    settings: Settings, *, single_process: bool = False
) -> AbstractAsyncContextManager[TaskStore]:
    """`single_process`: no other service process writes the store (`serve`), so a SQLite
    store may run small batches on the event loop's thread. Only a `droneflow token` command
    run meanwhile writes the file too, and the loop then waits out its one short transaction."""
    url = settings.store_url
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from shared.store.sqlite import SQLiteTaskStore

        inline_max = INLINE_BATCH_MAX if single_process else 0
        return SQLiteTaskStore(sqlite_path(url), inline_max=inline_max)
    if scheme in ("mongodb", "mongodb+srv"):
        from shared.store.mongo import MongoTaskStore

        return MongoTaskStore(url, timeout_s=settings.store_timeout_s)
    raise ConfigurationError(
        f"DRONEFLOW_STORE_URL: unsupported scheme {scheme!r} (use sqlite:/// or mongodb://)"
    )


def sqlite_path(url: str) -> Path:
    """sqlite:///relative/path.db and sqlite:////absolute/path.db, as SQLAlchemy reads them."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ConfigurationError(f"DRONEFLOW_STORE_URL: expected sqlite:///<path>, got {url!r}")
    return Path(url[len(prefix) :])
