"""Idle drones for bench/connections.py: many drone sockets per process that only answer the
tasks they are sent, each timing its delivery. Children are driven over a pipe."""

import asyncio
import gc
import multiprocessing
import os
import resource
import traceback
from multiprocessing.connection import Connection
from typing import Any

import orjson
from generators import run_loop
from procfs import now
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

CONNECTS_IN_FLIGHT = 200  # handshakes a process has open at once


def lift_open_file_limit() -> int:
    """The soft limit on open files raised to the hard one: each drone holds a descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class IdleFleet:
    def __init__(self, ws_url: str, compression: str | None) -> None:
        self.ws_url = ws_url
        self.compression = compression
        self.sockets: dict[str, tuple[ClientConnection, asyncio.Task[None]]] = {}
        self.latencies_s: list[tuple[float, float]] = []
        """(sent at, delivery time) of each task received."""
        self.failures: list[str] = []

    async def connect(self, drone_ids: list[str]) -> tuple[int, list[str]]:
        self.failures = []
        slots = asyncio.Semaphore(CONNECTS_IN_FLIGHT)

        async def one(drone_id: str) -> None:
            async with slots:
                try:
                    ws = await connect(
                        f"{self.ws_url}/ws/drone/{drone_id}?capacity=1",
                        compression=self.compression,  # "deflate" is the client default
                        ping_interval=None,  # the server's pings keep the socket alive
                        proxy=None,
                        open_timeout=120,
                    )
                    await ws.recv(decode=False)  # connection_established
                except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError) as exc:
                    self.failures.append(f"{drone_id}: {exc!r}")
                    return
            self.sockets[drone_id] = (ws, asyncio.create_task(self._serve(ws, drone_id)))

        await asyncio.gather(*(one(drone_id) for drone_id in drone_ids))
        return len(self.sockets), self.failures[:5]

    async def _serve(self, ws: ClientConnection, drone_id: str) -> None:
        try:
            while True:
                message = orjson.loads(await ws.recv(decode=False))
                if message.get("type") != "processing_task":
                    continue
                input_data = message["task_data"]["input_data"]
                sent_at = input_data["sent_at"]
                self.latencies_s.append((sent_at, now() - sent_at))
                reply = {
                    "type": "processing_result",
                    "data": {
                        "task_id": message["task_id"],
                        "drone_id": drone_id,
                        "result_data": {},
                        "success": True,
                    },
                }
                await ws.send(orjson.dumps(reply), text=True)
        except ConnectionClosed:
            pass

    async def close_all(self) -> int:
        sockets, self.sockets = self.sockets, {}
        slots = asyncio.Semaphore(CONNECTS_IN_FLIGHT)

        async def one(ws: ClientConnection, serving: asyncio.Task[None]) -> None:
            async with slots:
                await ws.close()
                await serving

        await asyncio.gather(*(one(*pair) for pair in sockets.values()))
        return len(sockets)

    def take_latencies(self) -> list[tuple[float, float]]:
        latencies, self.latencies_s = self.latencies_s, []
        return latencies


class IdleFleetProcesses:
    """One IdleFleet per child process; each command goes to all and their answers come back."""

    def __init__(self, processes: int, ws_url: str, compression: str | None) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.children = []
        for _ in range(processes):
            mine, theirs = context.Pipe()
            child = context.Process(
                target=_child_main, args=(theirs, ws_url, compression), daemon=True
            )
            child.start()
            self.pipes.append(mine)
            self.children.append(child)

    async def ask(self, commands: list[Any]) -> list[Any]:
        for pipe, command in zip(self.pipes, commands, strict=True):
            pipe.send(command)
        answers = await asyncio.gather(*(asyncio.to_thread(pipe.recv) for pipe in self.pipes))
        for answer in answers:
            if isinstance(answer, str):
                raise SystemExit(f"drone process failed:\n{answer}")
        return answers

    async def ask_all(self, command: Any) -> list[Any]:
        return await self.ask([command] * len(self.pipes))

    def stop(self) -> None:
        for pipe in self.pipes:
            pipe.send(None)
        for child in self.children:
            child.join(30)


def _child_main(pipe: Connection, ws_url: str, compression: str | None) -> None:
    lift_open_file_limit()
    run_loop(lambda: _child(pipe, ws_url, compression))


async def _child(pipe: Connection, ws_url: str, compression: str | None) -> None:
    fleet = IdleFleet(ws_url, compression)
    try:
        while (command := await asyncio.to_thread(pipe.recv)) is not None:
            kind, *rest = command
            if kind == "connect":
                connected = await fleet.connect(*rest)
                # 9,000 sockets' objects made every full collection of this process walk them:
                # passes of 0.25-0.75 s, during which its drones time deliveries late (the
                # server's own collections stayed under 20 ms). Frozen, they are not walked.
                gc.freeze()
                pipe.send(connected)
            elif kind == "latencies":
                pipe.send(fleet.take_latencies())
            elif kind == "close":
                closed = await fleet.close_all()
                gc.unfreeze()  # what the closed sockets left in cycles is collectable again
                pipe.send(closed)
            elif kind == "pid":
                pipe.send(os.getpid())
        await fleet.close_all()
    except BaseException:
        pipe.send(traceback.format_exc())
        raise
