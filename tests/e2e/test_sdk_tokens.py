"""The SDK against a server with tokens on: the right tokens carry a task through, and a token
the server refuses is final for the client (it does not reconnect forever)."""

import asyncio
from pathlib import Path
from typing import Any

import pytest

from droneflow.client import AppClient, ConnectionRefused, DroneWorker, Task, TaskRejected
from tests.authz_table import write_key_pair
from tests.e2e.conftest import Server
from tests.sdk_workers import fast_backoff, running

DAY_S = 86400.0
HANG_GUARD_S = 15.0


async def test_sdk_with_tokens_carries_a_task_through(server_factory: Any, tmp_path: Path) -> None:
    # Given a server with tokens on, and an app and a drone with their own tokens
    keys, private_key_file, _ = write_key_pair(tmp_path / "keys")
    server: Server = await server_factory(auth="token", auth_private_key_file=private_key_file)
    worker = DroneWorker(
        server.base_url,
        drone_id="TokDrone",
        token=keys.issue("drone", "TokDrone", DAY_S),
        capacity=1,
        backoff=fast_backoff(),
    )

    @worker.handler("echo")
    async def echo(task: Task) -> dict[str, object]:
        return {"echo": task.input_data}

    # When the app submits a task to the drone
    async with (
        running(worker),
        AppClient(
            server.ws_url,
            app_id="TokApp",
            token=keys.issue("app", "TokApp", DAY_S, drones=("Tok*",)),
            backoff=fast_backoff(),
        ) as app,
    ):
        handle = await app.submit(drone_id="TokDrone", task_type="echo", input_data={"n": 1})
        result = await handle.result(timeout=HANG_GUARD_S)

    # Then the result comes back through both authenticated sockets
    assert result.result_data == {"echo": {"n": 1}}


async def test_sdk_with_a_refused_token_gives_up_with_connection_refused(
    server_factory: Any, tmp_path: Path
) -> None:
    keys, private_key_file, _ = write_key_pair(tmp_path / "keys")
    server: Server = await server_factory(auth="token", auth_private_key_file=private_key_file)
    # A drone's token on an application's path
    drone_token = keys.issue("drone", "TokApp", DAY_S)

    async def submit_with_it() -> None:
        async with (
            asyncio.timeout(HANG_GUARD_S),
            AppClient(
                server.ws_url, app_id="TokApp", token=drone_token, backoff=fast_backoff()
            ) as app,
        ):
            await app.submit(drone_id="D1", task_type="echo", input_data={})

    with pytest.raises(ConnectionRefused, match="token"):
        await submit_with_it()


async def test_sdk_submission_the_server_refuses_fails_at_once_with_its_code(
    server_factory: Any, tmp_path: Path
) -> None:
    keys, private_key_file, _ = write_key_pair(tmp_path / "keys")
    server: Server = await server_factory(auth="token", auth_private_key_file=private_key_file)
    token = keys.issue("app", "TokApp", DAY_S, drones=("Tok*",))
    async with AppClient(server.ws_url, app_id="TokApp", token=token) as app:
        # A drone outside the token's patterns: refused, and the caller hears it, not a timeout
        with pytest.raises(TaskRejected) as rejected:
            await app.submit(
                drone_id="OtherDrone", task_type="echo", input_data={}, wait_s=HANG_GUARD_S
            )

    assert rejected.value.error_code == "forbidden"
    assert "OtherDrone" in rejected.value.message
