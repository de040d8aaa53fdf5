"""Log lines of every droneflow process, droneflow's own and uvicorn's, in one format
(DRONEFLOW_LOG_FORMAT):

- `text`: `2026-01-02 03:04:05,678 INFO gateway.connections: message drone_id=D1 task_id=task_…`
- `json`: one object per line: `timestamp` (UTC, ISO 8601), `level`, `logger`, `message`, then
  `task_id`, `app_id` and `drone_id` where known, uvicorn's access fields (`client`, `method`,
  `path`, `status`) on an access line, and `exception` (the traceback text) when there is one.

A field is known when the log call passes it (`extra={"task_id": …}`), or when it was bound
with `bind_log_fields` in the task that logs: a WebSocket handler binds its drone or app id
once, and every line logged while it serves that socket carries it.
"""

import logging
import sys
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Final, Literal, TextIO
from urllib.parse import urlsplit, urlunsplit

import orjson

LogFormat = Literal["text", "json"]

FIELDS: Final = ("task_id", "app_id", "drone_id")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_NO_FIELDS: Final[Mapping[str, str]] = MappingProxyType({})
_bound_fields: ContextVar[Mapping[str, str]] = ContextVar(
    "droneflow_log_fields", default=_NO_FIELDS
)


def bind_log_fields(**fields: str) -> None:
    """Adds fields to every line logged from now on in the current task (and the tasks it
    creates). Cheap enough for once per connection; not meant for once per message."""
    _bound_fields.set({**_bound_fields.get(), **fields})


def fields_of(record: logging.LogRecord) -> dict[str, object]:
    bound = _bound_fields.get()
    known: dict[str, object] = {}
    for name in FIELDS:
        value = record.__dict__.get(name, bound.get(name))
        if value is not None:
            known[name] = value
    return known


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = fields_of(record)
        if not fields:
            return line
        return line + "".join(f" {name}={value}" for name, value in fields.items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line, encoded with orjson (already a dependency for the wire), so
    that a record costs one dict and one `dumps`. Values orjson cannot encode become str."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(fields_of(record))
        if record.name == "uvicorn.access":
            entry.update(_access_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def _access_fields(record: logging.LogRecord) -> dict[str, object]:
    # uvicorn's access line: '%s - "%s %s HTTP/%s" %d' % (client, method, path, version,
    # status). A record whose path was redacted has no args left; its message says it all.
    args = record.args
    if not isinstance(args, tuple) or len(args) != 5:
        return {}
    client, method, path, _, status = args
    return {"client": client, "method": method, "path": path, "status": status}


UVICORN_LOGGERS: Final = ("uvicorn", "uvicorn.error", "uvicorn.access")


def configure_logging(
    log_format: LogFormat,
    level: str,
    filters: Iterable[logging.Filter] = (),
    stream: TextIO | None = None,
) -> None:
    """One handler, on the root logger, that every line goes through: droneflow's, uvicorn's
    (when uvicorn is given no log_config of its own) and the drivers'. `filters` run on it,
    so they see every record, whichever logger made it. `stream`: stderr unless given."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    for log_filter in filters:
        handler.addFilter(log_filter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's own dictConfig (made by any uvicorn.Config given a log_config, as earlier in the
    # same process) leaves its loggers with handlers of their own and propagation off.
    for name in UVICORN_LOGGERS:
        uvicorn_logger = logging.getLogger(name)
        for old in list(uvicorn_logger.handlers):
            uvicorn_logger.removeHandler(old)
        uvicorn_logger.propagate = True
        uvicorn_logger.setLevel(logging.NOTSET)


def url_without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))
