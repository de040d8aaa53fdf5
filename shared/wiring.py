"""The only place adapters are chosen: from the URLs in Settings to a Broker and a TaskStore."""

from contextlib import AbstractAsyncContextManager
from pathlib import Path
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


def build_store(settings: Settings) -> AbstractAsyncContextManager[TaskStore]:
    url = settings.store_url
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from shared.store.sqlite import SQLiteTaskStore

        return SQLiteTaskStore(sqlite_path(url))
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
