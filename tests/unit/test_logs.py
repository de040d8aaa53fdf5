"""Log lines in both formats: the fields they carry, and no token in any of them."""

import asyncio
import io
import json
import logging
from collections.abc import Callable, Iterator

import pytest

from droneflow.runner import MAX_RETRY_S, retry_delay_s
from droneflow.security import RedactTokens
from shared.logs import LogFormat, bind_log_fields, configure_logging, url_without_password

TOKEN = "eyJhbGciOiJFZERTQSJ9.not-a-real-token"


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, given back as pytest set it up."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def logged(log_format: LogFormat, emit: Callable[[], None]) -> list[str]:
    stream = io.StringIO()
    configure_logging(log_format, "info", filters=[RedactTokens()], stream=stream)
    emit()
    return stream.getvalue().splitlines()


def test_json_line_holds_the_record_its_fields_and_the_exception(
    root_logger: logging.Logger,
) -> None:
    def emit() -> None:
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("dispatcher.service").exception(
                "task %s failed", "task_1", extra={"task_id": "task_1", "drone_id": "D1"}
            )

    [line] = logged("json", emit)

    entry = json.loads(line)
    assert entry["level"] == "ERROR" and entry["logger"] == "dispatcher.service"
    assert entry["message"] == "task task_1 failed"
    assert entry["task_id"] == "task_1" and entry["drone_id"] == "D1" and "app_id" not in entry
    assert "Traceback" in entry["exception"] and "ValueError: boom" in entry["exception"]
    assert entry["timestamp"].endswith("+00:00")


def test_text_line_ends_with_the_known_fields(root_logger: logging.Logger) -> None:
    [line] = logged(
        "text", lambda: logging.getLogger("gateway").warning("late", extra={"app_id": "A1"})
    )

    assert line.endswith(" WARNING gateway: late app_id=A1")


async def test_fields_bound_in_a_task_mark_its_lines_only(root_logger: logging.Logger) -> None:
    log = logging.getLogger("gateway.routes.ws")

    async def drone_socket() -> None:
        bind_log_fields(drone_id="D7")
        log.info("inside")

    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    log.info("before")
    await asyncio.create_task(drone_socket())
    log.info("after")

    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["message"], e.get("drone_id")) for e in entries] == [
        ("before", None),
        ("inside", "D7"),
        ("after", None),
    ]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_token_reaches_a_line_in_either_format(
    root_logger: logging.Logger, log_format: LogFormat
) -> None:
    def emit() -> None:
        logging.getLogger("uvicorn.error").info(
            '%s - "WebSocket %s" [accepted]', "127.0.0.1:5", f"/ws/drone/D1?token={TOKEN}"
        )
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", f"/api/tasks?token={TOKEN}", "1.1", 200
        )
        logging.getLogger("droneflow").warning("refused Authorization: Bearer %s", TOKEN)

    lines = logged(log_format, emit)

    assert len(lines) == 3
    assert not any(TOKEN in line for line in lines), lines
    assert all("[redacted]" in line for line in lines), lines


def test_json_access_line_has_the_request_fields(root_logger: logging.Logger) -> None:
    [line] = logged(
        "json",
        lambda: logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "POST", "/api/tasks", "1.1", 201
        ),
    )

    entry = json.loads(line)
    assert entry["message"] == '127.0.0.1:5 - "POST /api/tasks HTTP/1.1" 201'
    assert (entry["client"], entry["method"], entry["path"], entry["status"]) == (
        "127.0.0.1:5",
        "POST",
        "/api/tasks",
        201,
    )


def test_url_without_password_keeps_the_rest() -> None:
    assert (
        url_without_password("amqp://guest:s3cret@rabbit:5672/vh")
        == "amqp://guest:***@rabbit:5672/vh"
    )
    assert url_without_password("mongodb://:s3cret@m/db") == "mongodb://:***@m/db"
    assert url_without_password("amqp://rabbit/") == "amqp://rabbit/"


def test_retry_delays_are_jittered_under_a_doubling_ceiling() -> None:
    ceilings = []
    for failed_attempts in range(1, 12):
        delay_s, ceiling_s = retry_delay_s(failed_attempts)
        assert 0 <= delay_s <= ceiling_s
        ceilings.append(ceiling_s)

    assert ceilings[:4] == [0.5, 1.0, 2.0, 4.0]
    assert ceilings[-1] == MAX_RETRY_S and max(ceilings) == MAX_RETRY_S
