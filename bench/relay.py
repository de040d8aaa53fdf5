"""The least a droneflow round trip can cost on this machine: the same four WebSocket frames
through the same uvicorn and Starlette, relayed in memory, with no gateway, broker, dispatcher
or result writer. With `--store` it also makes the store writes `serve` makes for a task, through
the same SQLiteTaskStore: create_task then claim before the task frame goes to the drone,
save_result before the result frame goes to the app, mark_notified after it.

It speaks just enough of the protocol for bench/loadgen.py (`connection_established`,
`processing_task`, `processing_result`, `processing_result_received`) and checks nothing: it is a
yardstick, never a server. Frames of one socket are handled concurrently, as the gateway
pipelines `processing_task` and `processing_result` frames.

    python bench/relay.py --port 8765 [--store] [--data-dir DIR]
"""

import argparse
import asyncio
import gc
import signal
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson
import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from droneflow.runner import GC_YOUNG_THRESHOLD, SignalFreeServer
from shared.clock import now_iso
from shared.ids import new_object_id, new_task_id
from shared.models import NewTask, ResultRecord
from shared.store import TaskStore
from shared.store.sqlite import SQLiteTaskStore

WELCOME = orjson.dumps({"type": "connection_established"}).decode()


class Relay:
    def __init__(self, store: TaskStore | None) -> None:
        self.store = store
        self.apps: dict[str, WebSocket] = {}
        self.drones: dict[str, WebSocket] = {}
        self.app_of_task: dict[str, str] = {}
        self.running: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def submit(self, app_id: str, data: dict[str, Any]) -> None:
        task_id, drone_id = new_task_id(), data["drone_id"]
        self.app_of_task[task_id] = app_id
        if self.store is not None:
            new = NewTask(
                task_id=task_id,
                app_id=app_id,
                drone_id=drone_id,
                task_type=data["task_type"],
                input_data=data["input_data"],
                priority=data["priority"],
            )
            await self.store.create_task(new)
            await self.store.claim(task_id, drone_id)
        frame = {
            "type": "processing_task",
            "task_id": task_id,
            "task_data": {"input_data": data["input_data"]},
            "attempt": 1,
        }
        await self.drones[drone_id].send_text(orjson.dumps(frame).decode())

    async def report(self, drone_id: str, data: dict[str, Any]) -> None:
        task_id = data["task_id"]
        if self.store is not None:
            result = ResultRecord(
                result_id=new_object_id(),
                task_id=task_id,
                drone_id=drone_id,
                result_data=data["result_data"],
                processing_time=data.get("processing_time"),
                success=data["success"],
                timestamp=now_iso(),
            )
            await self.store.save_result(result)
        frame = {
            "type": "processing_result_received",
            "task_id": task_id,
            "result_data": data["result_data"],
            "success": data["success"],
        }
        await self.apps[self.app_of_task.pop(task_id)].send_text(orjson.dumps(frame).decode())
        if self.store is not None:
            self.spawn(self.store.mark_notified([task_id]))

    async def serve(
        self,
        websocket: WebSocket,
        sockets: dict[str, WebSocket],
        on_frame: Callable[[str, dict[str, Any]], Coroutine[Any, Any, None]],
    ) -> None:
        client_id = websocket.path_params["client_id"]
        await websocket.accept()
        sockets[client_id] = websocket
        await websocket.send_text(WELCOME)
        try:
            while True:
                frame = orjson.loads(await websocket.receive_text())
                self.spawn(on_frame(client_id, frame["data"]))
        except WebSocketDisconnect:
            sockets.pop(client_id, None)


def build_app(relay: Relay) -> Starlette:
    async def healthz(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def application(websocket: WebSocket) -> None:
        await relay.serve(websocket, relay.apps, relay.submit)

    async def drone(websocket: WebSocket) -> None:
        await relay.serve(websocket, relay.drones, relay.report)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            WebSocketRoute("/ws/application/{client_id}", application),
            WebSocketRoute("/ws/drone/{client_id}", drone),
        ]
    )


async def main(args: argparse.Namespace) -> None:
    # serve's collector setting (droneflow.runner), so that only the services differ.
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])

    async def run(relay: Relay) -> None:
        # The same protocol implementations `serve` runs on (uvloop, httptools, websockets-sansio).
        config = uvicorn.Config(
            build_app(relay),
            host="127.0.0.1",
            port=args.port,
            loop="none",
            http="httptools",
            ws="websockets-sansio",
            ws_per_message_deflate=False,
            log_level="warning",
        )
        # The relay owns SIGTERM: uvicorn's handlers re-raise it after shutting down, which would
        # end the process before the store is closed and its scratch directory removed.
        server = SignalFreeServer(config)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, setattr, server, "should_exit", True)
        await server.serve()

    if not args.store:
        await run(Relay(None))
        return
    with tempfile.TemporaryDirectory(prefix="droneflow-bench-relay-") as scratch:
        path = (args.data_dir or Path(scratch)) / "relay.db"
        async with SQLiteTaskStore(path) as store:
            await run(Relay(store))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", action="store_true", help="make serve's store writes too")
    parser.add_argument("--data-dir", type=Path, help="where the store's file goes")
    uvloop.run(main(parser.parse_args()))
