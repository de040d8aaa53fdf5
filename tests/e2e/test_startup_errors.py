"""A start that cannot work ends with one line naming the setting to change, no traceback, and
the exit code `droneflow --help` documents; a distributed service keeps trying its broker,
backing off, one line per attempt. And what a running server logs in DRONEFLOW_LOG_FORMAT=json."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from droneflow.startup import EXIT_CANNOT_LISTEN, EXIT_CONFIGURATION, EXIT_UNREACHABLE
from tests.e2e.clients import WsClient, free_port, result_message, task_body
from tests.processes import ServiceProcess

RUN_TIMEOUT_S = 60.0
RETRY_LINES_TIMEOUT_S = 30.0
UNUSED_SECRET = "hunter2-not-a-token"


def droneflow(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "droneflow.cli", *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    data_dir = tmp_path / "data"
    return {
        "DRONEFLOW_DATA_DIR": str(data_dir),
        "DRONEFLOW_STORE_URL": f"sqlite:///{data_dir / 'droneflow.db'}",
        "DRONEFLOW_BROKER_URL": "memory://",
        "DRONEFLOW_LOG_LEVEL": "info",
    }


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def error_lines(run: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in run.stderr.splitlines() if line.startswith("droneflow: error: ")]


def assert_fails_in_one_line(run: subprocess.CompletedProcess[str], exit_code: int) -> str:
    assert run.returncode == exit_code, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    [line] = error_lines(run)
    return line


@pytest.mark.parametrize("command", ["serve", "gateway"])
def test_startup_on_a_port_in_use_names_the_port_setting(
    env: dict[str, str], taken_port: int, command: str
) -> None:
    broker = f"amqp://guest:guest@127.0.0.1:{free_port()}/"  # not reached: the port fails first
    env = {**env, "DRONEFLOW_AUTH": "disabled"}
    if command == "gateway":
        env["DRONEFLOW_BROKER_URL"] = broker

    run = droneflow(env, command, "--port", str(taken_port))

    line = assert_fails_in_one_line(run, EXIT_CANNOT_LISTEN)
    assert f"port {taken_port} on 127.0.0.1 is already in use" in line
    assert "DRONEFLOW_PORT" in line and "--port" in line
    assert "startup complete" not in run.stderr


@pytest.mark.parametrize("command", ["gateway", "dispatcher", "result-writer"])
def test_a_lone_service_on_the_memory_broker_refuses_to_start(
    env: dict[str, str], command: str
) -> None:
    run = droneflow({**env, "DRONEFLOW_AUTH": "disabled"}, command)

    line = assert_fails_in_one_line(run, EXIT_CONFIGURATION)
    assert f"`droneflow {command}` alone cannot work on DRONEFLOW_BROKER_URL=memory://" in line
    assert "droneflow serve" in line and "amqp://" in line


def test_a_bad_setting_names_its_environment_variable(env: dict[str, str]) -> None:
    run = droneflow({**env, "DRONEFLOW_PORT": "abc"}, "serve")

    line = assert_fails_in_one_line(run, EXIT_CONFIGURATION)
    assert line == (
        "droneflow: error: DRONEFLOW_PORT=abc is not a valid integer; "
        "set DRONEFLOW_PORT to a port number (0 to 65535)"
    )
    assert run.stderr == line + "\n"


def test_the_token_command_names_a_bad_setting_the_same_way(env: dict[str, str]) -> None:
    run = droneflow({**env, "DRONEFLOW_PORT": "abc"}, "token", "list")

    line = assert_fails_in_one_line(run, EXIT_CONFIGURATION)
    assert line.startswith("droneflow: error: DRONEFLOW_PORT=abc is not a valid integer")


def test_a_bad_command_line_value_names_the_option(env: dict[str, str]) -> None:
    run = droneflow(env, "serve", "--port", "70000")

    line = assert_fails_in_one_line(run, EXIT_CONFIGURATION)
    assert line.startswith("droneflow: error: --port 70000 ")
    assert "65535" in line


def test_serve_with_a_store_it_cannot_open_names_the_store_setting(
    env: dict[str, str], tmp_path: Path
) -> None:
    not_a_directory = tmp_path / "a-file"
    not_a_directory.write_text("")
    store_url = f"sqlite:///{not_a_directory / 'droneflow.db'}"

    run = droneflow({**env, "DRONEFLOW_STORE_URL": store_url}, "serve", "--port", str(free_port()))

    line = assert_fails_in_one_line(run, EXIT_UNREACHABLE)
    assert f"store at {store_url} (DRONEFLOW_STORE_URL) unavailable" in line


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["dispatcher", "--help"]])
def test_help_documents_the_exit_codes(argv: list[str]) -> None:
    run = droneflow({"COLUMNS": "200"}, *argv)

    assert run.returncode == 0
    assert "Exit codes of serve, gateway, dispatcher and result-writer" in run.stdout
    for code, meaning in (
        (EXIT_CONFIGURATION, "configuration"),
        (EXIT_CANNOT_LISTEN, "could not listen"),
        (EXIT_UNREACHABLE, "serve could not open its store or broker"),
    ):
        assert f"{code}: {meaning}" in run.stdout


@pytest.mark.parametrize("command", ["gateway", "dispatcher"])
async def test_a_service_whose_broker_is_unreachable_retries_with_backoff(
    env: dict[str, str], command: str
) -> None:
    broker_url = f"amqp://guest:{UNUSED_SECRET}@127.0.0.1:{free_port()}/"
    env = {**env, "DRONEFLOW_BROKER_URL": broker_url, "DRONEFLOW_AUTH": "disabled"}
    argv = ["--port", str(free_port())] if command == "gateway" else []
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "droneflow.cli", command, *argv,
        env={**os.environ, **env},
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    lines: list[str] = []
    try:
        # Given four failed attempts, each logged once
        async with asyncio.timeout(RETRY_LINES_TIMEOUT_S):
            while sum("attempt" in line for line in lines) < 4:
                line = (await process.stderr.readline()).decode()
                assert line, f"{command} exited: {lines}"
                lines.append(line)
    finally:
        # When it is stopped
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        rest = (await process.stderr.read()).decode()
        exit_code = await process.wait()

    # Then each attempt said what it could not reach, and the backoff ceiling doubled
    attempts = [line for line in lines if "attempt" in line]
    for number, (line, ceiling_s) in enumerate(zip(attempts, (0.5, 1.0, 2.0, 4.0), strict=True), 1):
        assert f"{command} could not start: broker at amqp://guest:***@127.0.0.1:" in line
        assert "(DRONEFLOW_BROKER_URL) unavailable: RabbitMQ: " in line
        assert f"attempt {number} failed, next in " in line
        assert f"(backoff up to {ceiling_s:.1f} s)" in line
    # and neither the password nor aio-pika's own lines nor a traceback showed up
    output = "".join(lines) + rest
    assert UNUSED_SECRET not in output
    assert "Reconnecting" not in output and "aiormq" not in output
    assert "Traceback" not in output
    assert exit_code == 0


async def test_json_logs_carry_uvicorn_lines_and_drone_ids_and_no_token(
    env: dict[str, str], tmp_path: Path
) -> None:
    # Given `serve` logging JSON, with the access log on
    json_env = {**env, "DRONEFLOW_LOG_FORMAT": "json", "DRONEFLOW_ACCESS_LOG": "true"}
    server = ServiceProcess("serve", json_env, tmp_path, "json-serve")
    await server.start()
    try:
        # When an application submits a task that a drone, holding a token in its URL, answers
        async with (
            WsClient(f"{server.ws_url}/ws/application/JsonApp") as app,
            WsClient(f"{server.ws_url}/ws/drone/JsonDrone?token={UNUSED_SECRET}") as drone,
        ):
            await app.send(
                {
                    "type": "processing_task",
                    "request_id": "r",
                    "data": task_body("JsonApp", "JsonDrone"),
                }
            )
            task_id = (await app.wait_type("task_created"))["task_id"]
            await drone.wait_type("processing_task", task_id=task_id)
            await drone.send(result_message(task_id, "JsonDrone"))
            await app.wait_type("processing_result_received", task_id=task_id)
    finally:
        exit_code = server.terminate()
    log_text = (tmp_path / "json-serve.1.log").read_text()

    # Then every line is one JSON object
    entries = [json.loads(line) for line in log_text.splitlines()]
    assert exit_code == 0
    assert all({"timestamp", "level", "logger", "message"} <= entry.keys() for entry in entries)
    # among them uvicorn's access lines, with their fields
    assert any(
        entry["logger"] == "uvicorn.access"
        and entry["path"] == "/healthz"
        and entry["status"] == 200
        for entry in entries
    ), entries
    # and lines about the drone's and the application's sockets, which say whose they are
    assert any(entry.get("drone_id") == "JsonDrone" for entry in entries), entries
    assert any(entry.get("app_id") == "JsonApp" for entry in entries), entries
    # and the drone's token appears in none of them
    assert UNUSED_SECRET not in log_text
    assert any("token=[redacted]" in entry["message"] for entry in entries), entries


def test_serve_with_an_unreachable_mongodb_names_the_store_setting(env: dict[str, str]) -> None:
    store_url = f"mongodb://droneflow:{UNUSED_SECRET}@127.0.0.1:{free_port()}/droneflow"

    run = droneflow({**env, "DRONEFLOW_STORE_URL": store_url}, "serve", "--port", str(free_port()))

    line = assert_fails_in_one_line(run, EXIT_UNREACHABLE)
    assert "store at mongodb://droneflow:***@127.0.0.1:" in line
    assert "(DRONEFLOW_STORE_URL) unavailable: MongoDB" in line
    assert UNUSED_SECRET not in run.stderr


def test_a_dispatcher_whose_metrics_port_is_in_use_names_that_setting(
    env: dict[str, str], taken_port: int
) -> None:
    broker = f"amqp://guest:guest@127.0.0.1:{free_port()}/"  # not reached: the port fails first
    env = {**env, "DRONEFLOW_BROKER_URL": broker, "DRONEFLOW_METRICS_PORT": str(taken_port)}

    run = droneflow(env, "dispatcher")

    line = assert_fails_in_one_line(run, EXIT_CANNOT_LISTEN)
    assert f"cannot serve on 127.0.0.1:{taken_port}" in line
    assert "DRONEFLOW_METRICS_PORT" in line
