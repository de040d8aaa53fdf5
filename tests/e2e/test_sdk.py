"""The SDK end to end against an embedded server: AppClient and DroneWorker over real sockets."""

import asyncio
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from droneflow.client import (
    AppClient,
    DroneWorker,
    SyncAppClient,
    Task,
    TaskFailed,
    TaskHandle,
    TaskRejected,
)
from droneflow.client.handles import update_of_snapshot
from shared.clock import format_timestamp, parse_timestamp
from tests.e2e.conftest import Server
from tests.e2e.metrics import counter, wait_counter
from tests.processes import ServiceProcess
from tests.sdk_workers import Gate, fast_backoff, running
from tests.tcp_proxy import LateTcpProxy

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HANG_GUARD_S = 20.0


def make_worker(url: str, drone_id: str, gate: Gate) -> DroneWorker:
    worker = DroneWorker(url, drone_id=drone_id, capacity=2, backoff=fast_backoff())
    worker.handler("gated")(gate)

    @worker.handler("explode")
    async def explode(task: Task) -> dict[str, object]:
        raise RuntimeError(f"no image at {task.input_data['image_url']}")

    return worker


async def test_sdk_submit_reports_progress_and_result(server: Server) -> None:
    gate = Gate()
    async with (
        running(make_worker(server.base_url, "SdkDrone", gate)),
        AppClient(server.ws_url, app_id="SdkApp", backoff=fast_backoff()) as app,
    ):
        # Given a submitted task whose handler reported progress
        handle = await app.submit(
            drone_id="SdkDrone",
            task_type="gated",
            input_data={"image_url": "https://example.com/a.jpg"},
            priority=4,
            timeout_s=60,
            max_attempts=2,
        )
        task = await asyncio.wait_for(gate.started.get(), 10)
        updates = handle.updates()
        progress = await asyncio.wait_for(anext(updates), 10)

        # When the handler returns
        gate.opened.set()
        result = await handle.result(timeout=10)
        rest = [update async for update in updates]

    # Then the app saw the progress, then the final state, and the result
    assert (task.task_id, task.priority, task.attempt) == (handle.task_id, 4, 1)
    assert progress.status == "processing" and progress.additional_data == {"progress": 50}
    assert [u.status for u in rest] == ["completed"]
    assert result.result_data == {"echo": {"image_url": "https://example.com/a.jpg"}, "attempt": 1}
    assert result.processing_time is not None and result.processing_time >= 0
    assert [u.status for u in handle.history] == ["processing", "completed"]


async def test_sdk_handler_exception_becomes_task_failed(server: Server) -> None:
    async with (
        running(make_worker(server.base_url, "SdkDrone", Gate())),
        AppClient(server.base_url, app_id="SdkApp") as app,
    ):
        handle = await app.submit(
            drone_id="SdkDrone", task_type="explode", input_data={"image_url": "nowhere"}
        )
        with pytest.raises(TaskFailed) as failed:
            await handle.result(timeout=10)
        statuses = [u.status async for u in handle.updates()]

    assert failed.value.error_code == "drone_error"
    assert failed.value.message == "no image at nowhere"
    assert statuses == ["failed"]


async def test_sdk_cancel_stops_the_handler(server: Server) -> None:
    gate = Gate()
    async with (
        running(make_worker(server.base_url, "SdkDrone", gate)),
        AppClient(server.base_url, app_id="SdkApp") as app,
    ):
        handle = await app.submit(drone_id="SdkDrone", task_type="gated", input_data={})
        await asyncio.wait_for(gate.started.get(), 10)

        assert await handle.cancel() is True
        with pytest.raises(TaskFailed) as failed:
            await handle.result(timeout=10)
        final = handle.history[-1]
        # The handler's asyncio task is cancelled once the drone hears of it
        assert await asyncio.wait_for(gate.cancelled.get(), 10) == handle.task_id
        assert await handle.cancel() is False

    assert failed.value.error_code == "cancelled" and final.status == "cancelled"


async def test_sdk_worker_stopping_finishes_the_task_it_holds(server: Server) -> None:
    gate = Gate()
    worker = make_worker(server.base_url, "SdkDrone", gate)
    async with AppClient(server.base_url, app_id="SdkApp") as app:
        serving = asyncio.create_task(worker.run(handle_signals=False))
        # Given a worker running a task
        handle = await app.submit(drone_id="SdkDrone", task_type="gated", input_data={"n": 1})
        await asyncio.wait_for(gate.started.get(), HANG_GUARD_S)

        # When it is asked to stop, and the task ends after that
        worker.stop()
        await asyncio.wait_for(worker.draining.wait(), HANG_GUARD_S)
        gate.opened.set()

        # Then the task completes, and the worker stops once it has
        result = await handle.result(timeout=HANG_GUARD_S)
        await asyncio.wait_for(serving, HANG_GUARD_S)

    assert result.result_data == {"echo": {"n": 1}, "attempt": 1}
    assert gate.cancelled.empty()


async def test_sdk_survives_kill_9_and_delivers_the_result_once(
    serve_process: ServiceProcess,
) -> None:
    proc = serve_process
    await proc.start()
    gate = Gate()
    worker = make_worker(proc.base_url, "SdkDrone", gate)
    async with (
        running(worker),
        AppClient(proc.base_url, app_id="SdkApp", backoff=fast_backoff()) as app,
    ):
        # Given a task a connected worker is running for a connected app, its progress seen
        handle = await app.submit(drone_id="SdkDrone", task_type="gated", input_data={"n": 1})
        await asyncio.wait_for(gate.started.get(), 10)
        updates = handle.updates()
        progress = await asyncio.wait_for(anext(updates), 10)

        # When the server dies without warning and comes back
        proc.kill9()
        await proc.start()
        # A submission made around the restart waits for the connection instead of failing
        second = await app.submit(drone_id="SdkDrone", task_type="gated", input_data={"n": 2})
        await asyncio.wait_for(gate.started.get(), 10)
        gate.opened.set()

        # Then each caller sees every change once: one progress, then one result
        results = [await h.result(timeout=20) for h in (handle, second)]
        seen_after_restart = [u.status async for u in updates]
        seen_by_second = [u.status async for u in second.updates()]

    assert progress.status == "processing"
    assert seen_after_restart == ["completed"]
    assert seen_by_second == ["processing", "completed"]
    assert [r.result_data["echo"] for r in results] == [{"n": 1}, {"n": 2}]
    # and no handler ran twice
    assert sorted(gate.runs) == sorted([handle.task_id, second.task_id])


async def test_sdk_ignores_a_stored_snapshot_older_than_a_notification(server: Server) -> None:
    # A submission that crossed a reconnect reads its task back over REST; that read can be
    # answered after the drone's progress notification has already arrived.
    gate = Gate()
    async with AppClient(server.base_url, app_id="SdkApp", backoff=fast_backoff()) as app:
        handle = await app.submit(drone_id="SdkDrone", task_type="gated", input_data={"n": 1})
        stale = await app.get_task(handle.task_id)
        async with running(make_worker(server.base_url, "SdkDrone", gate)):
            await asyncio.wait_for(gate.started.get(), 10)
            updates = handle.updates()
            await asyncio.wait_for(anext(updates), 10)

            # When the stale pending snapshot is applied after the progress
            await app._apply_snapshot(handle, stale)
            gate.opened.set()
            await handle.result(timeout=10)

    # Then the task never went back to pending
    assert stale["status"] == "pending"
    assert [u.status for u in handle.history] == ["processing", "completed"]


async def test_sdk_shows_a_change_once_when_its_snapshot_overtakes_its_notification(
    server: Server,
) -> None:
    # A submission that crossed a reconnect reads its task back over REST; that read can be
    # answered before the notification of the change it shows arrives.
    gate = Gate()
    async with (
        running(make_worker(server.base_url, "SdkDrone", gate)),
        AppClient(server.base_url, app_id="SdkApp", backoff=fast_backoff()) as app,
    ):
        handle = await app.submit(drone_id="SdkDrone", task_type="gated", input_data={"n": 1})
        await asyncio.wait_for(gate.started.get(), 10)
        notified = await asyncio.wait_for(anext(handle.updates()), 10)
        stored = await app.get_task(handle.task_id)
        gate.opened.set()
        await handle.result(timeout=10)

    # Given the server's notification and its stored task, which carry the change's one time
    assert stored["status"] == notified.status == "processing"
    assert notified.timestamp == stored["updated_at"]
    # When a handle gets the snapshot first, then the notification it overtook, then the rest
    late = TaskHandle(handle.task_id, app.cancel)
    assert late.record(update_of_snapshot(stored), snapshot=True)
    assert not late.record(notified)
    # A later progress of the same status is news
    later = format_timestamp(parse_timestamp(stored["updated_at"]) + timedelta(milliseconds=5))
    assert late.record(replace(notified, timestamp=later, additional_data={"progress": 75}))
    for update in handle.history[1:]:
        late.record(update)

    # Then the change shows once, the later progress once, and the end
    assert [(u.status, u.additional_data) for u in late.history] == [
        ("processing", {}),
        ("processing", {"progress": 75}),
        ("completed", {}),
    ]


async def test_sdk_sync_facade_serves_a_script(server: Server) -> None:
    gate = Gate()
    gate.opened.set()

    def script() -> tuple[list[str], dict[str, object]]:
        with SyncAppClient(server.base_url, app_id="SyncApp") as app:
            handle = app.submit("SdkDrone", "gated", {"x": 1})  # positional, as the issue lists
            statuses = [update.status for update in handle.updates()]
            return statuses, handle.result(timeout=10).result_data

    async with running(make_worker(server.base_url, "SdkDrone", gate)):
        statuses, result = await asyncio.to_thread(script)

    assert statuses[-1] == "completed" and result == {"echo": {"x": 1}, "attempt": 1}


async def test_sdk_examples_run_against_a_server(serve_process: ServiceProcess) -> None:
    await serve_process.start()
    url = serve_process.base_url
    drone = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / "drone.py"), url, stderr=asyncio.subprocess.PIPE
    )
    try:
        for script in ("app.py", "script.py"):
            app = await asyncio.create_subprocess_exec(
                sys.executable, str(EXAMPLES / script), url, stdout=asyncio.subprocess.PIPE
            )
            output, _ = await asyncio.wait_for(app.communicate(), 30)
            assert app.returncode == 0, output
            assert b"'type': 'person'" in output
        # SIGTERM is a graceful stop
        drone.terminate()
        _, log = await asyncio.wait_for(drone.communicate(), 30)
        assert drone.returncode == 0, log
    finally:
        if drone.returncode is None:
            drone.kill()
            await drone.wait()


async def test_sdk_catches_up_on_a_result_missed_while_away(server_factory: object) -> None:
    # Notifications expire at once, so one the app misses is gone: only the listing has it
    server: Server = await server_factory(notification_ttl_s=0.001)  # type: ignore[operator]
    gate = Gate()
    async with (
        LateTcpProxy("127.0.0.1", server.settings.port) as proxy,
        httpx.AsyncClient(base_url=server.base_url) as http,
        running(make_worker(server.base_url, "SdkDrone", gate)),
    ):
        proxy.open()
        async with AppClient(
            f"http://127.0.0.1:{proxy.port}", app_id="AwayApp", backoff=fast_backoff()
        ) as app:
            # Given a task in progress, when the app's link drops and the task completes
            handle = await app.submit(drone_id="SdkDrone", task_type="gated", input_data={})
            await asyncio.wait_for(gate.started.get(), 10)
            stored = await counter(http, "droneflow_results_stored")
            proxy.cut()
            await proxy.turned_away_at_least(1)
            gate.opened.set()
            await wait_counter(http, "droneflow_results_stored", stored + 1)
            await proxy.turned_away_at_least(2)

            # Then, once the app is back, the result reaches the handle, once
            proxy.open()
            result = await handle.result(timeout=10)

    assert result.result_data == {"echo": {}, "attempt": 1}
    assert [u.status for u in handle.history if u.final] == ["completed"]


async def test_sdk_submit_over_the_frame_limit_is_rejected_at_once(server_factory: object) -> None:
    server: Server = await server_factory(max_frame_bytes=64 * 1024)  # type: ignore[operator]
    gate = Gate()
    gate.opened.set()
    async with (
        running(make_worker(server.base_url, "SdkDrone", gate)),
        AppClient(server.base_url, app_id="SdkApp", backoff=fast_backoff()) as app,
    ):
        # When a task too large for one frame is submitted, the caller hears so, not a timeout
        with pytest.raises(TaskRejected) as rejected:
            await app.submit(
                drone_id="SdkDrone",
                task_type="gated",
                input_data={"blob": "x" * (server.settings.max_frame_bytes + 1)},
                wait_s=HANG_GUARD_S,
            )

        # And the client goes on: the next task is carried through
        handle = await app.submit(drone_id="SdkDrone", task_type="gated", input_data={"n": 1})
        result = await handle.result(timeout=HANG_GUARD_S)

    assert rejected.value.error_code == "frame_too_large"
    assert str(server.settings.max_frame_bytes) in rejected.value.message
    assert result.result_data["echo"] == {"n": 1}


async def test_sdk_result_or_progress_over_the_frame_limit_becomes_task_failed(
    server_factory: object,
) -> None:
    server: Server = await server_factory(max_frame_bytes=64 * 1024)  # type: ignore[operator]
    worker = DroneWorker(server.base_url, drone_id="SdkDrone", backoff=fast_backoff())

    @worker.handler("huge")
    async def huge(task: Task) -> dict[str, object]:
        return {"blob": "x" * server.settings.max_frame_bytes}

    @worker.handler("huge_progress")
    async def huge_progress(task: Task) -> dict[str, object]:
        await task.progress(10, blob="x" * server.settings.max_frame_bytes)
        return {}

    async with running(worker), AppClient(server.base_url, app_id="SdkApp") as app:
        failures = []
        for task_type in ("huge", "huge_progress"):
            handle = await app.submit(drone_id="SdkDrone", task_type=task_type, input_data={})
            with pytest.raises(TaskFailed) as failed:
                await handle.result(timeout=HANG_GUARD_S)
            failures.append(failed.value)

    assert [f.error_code for f in failures] == ["drone_error", "drone_error"]
    assert all("over the gateway's limit" in f.message for f in failures)
