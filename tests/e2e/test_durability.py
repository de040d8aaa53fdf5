"""kill -9 of `droneflow serve` loses no accepted task and no un-notified result."""

import httpx

from tests.e2e.clients import WsClient, result_message, task_body
from tests.e2e.metrics import wait_counter
from tests.processes import ServiceProcess


async def test_kill_9_loses_no_task_and_no_unsent_result(serve_process: ServiceProcess) -> None:
    proc = serve_process
    await proc.start()
    async with httpx.AsyncClient(base_url=proc.base_url) as http:
        # Given: tasks waiting for an offline drone, a task a drone holds, and a result that
        # was stored while its application was offline
        waiting = [
            (
                await http.post(
                    "/api/processing-tasks", json=task_body("DurApp", "OfflineDrone", priority=p)
                )
            ).json()["task_id"]
            for p in (1, 5, 3)
        ]
        held = (
            await http.post("/api/processing-tasks", json=task_body("DurApp", "BusyDrone"))
        ).json()["task_id"]
        done = (
            await http.post("/api/processing-tasks", json=task_body("DurApp", "FastDrone"))
        ).json()["task_id"]
        async with WsClient(proc.ws_url + "/ws/drone/FastDrone") as fast:
            await fast.wait_type("processing_task", task_id=done)
            await fast.send(result_message(done, "FastDrone", result_data={"answer": 42}))
            await wait_counter(http, "droneflow_results_stored", 1)
        busy = WsClient(proc.ws_url + "/ws/drone/BusyDrone")
        await busy.connect()
        await busy.wait_type("processing_task", task_id=held)

    # When the process is killed without warning and started again
    proc.kill9()
    await busy.wait_closed()
    await proc.start()

    # Then every waiting task reaches its drone, in priority order
    async with WsClient(proc.ws_url + "/ws/drone/OfflineDrone") as offline:
        order = []
        for _ in waiting:
            frame = await offline.wait_for(
                lambda f: f.get("type") == "processing_task" and f["task_id"] not in order
            )
            order.append(frame["task_id"])
            await offline.send(result_message(frame["task_id"], "OfflineDrone"))
    assert order == [waiting[1], waiting[2], waiting[0]]

    # And the task the drone held is sent again when it reconnects, as the same delivery
    async with WsClient(proc.ws_url + "/ws/drone/BusyDrone") as busy_again:
        again = await busy_again.wait_type("processing_task", task_id=held)
        await busy_again.send(result_message(held, "BusyDrone"))
    assert again["attempt"] == 1 and again["resumed"] is True

    # And the application receives the result stored before the crash, and all the others
    async with WsClient(proc.ws_url + "/ws/application/DurApp") as app:
        first = await app.wait_type("processing_result_received", task_id=done)
        await app.wait_for(
            lambda _: (
                {f["task_id"] for f in app.of_type("processing_result_received")}
                == {done, held, *waiting}
            )
        )
    assert first["result_data"] == {"answer": 42}


async def test_sigterm_shuts_down_cleanly_and_keeps_tasks(serve_process: ServiceProcess) -> None:
    proc = serve_process
    await proc.start()
    async with httpx.AsyncClient(base_url=proc.base_url) as http:
        task_id = (
            await http.post("/api/processing-tasks", json=task_body("TermApp", "TermDrone"))
        ).json()["task_id"]
        drone = WsClient(proc.ws_url + "/ws/drone/TermDrone")
        await drone.connect()
        await drone.wait_type("processing_task", task_id=task_id)

    assert proc.terminate() == 0
    await drone.wait_closed()

    await proc.start()
    async with WsClient(proc.ws_url + "/ws/drone/TermDrone") as again:
        await again.wait_type("processing_task", task_id=task_id)
