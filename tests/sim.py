"""Simulated drones and applications that survive gateway crashes: they reconnect, resend what
was not acknowledged, and record everything they saw so tests can check the invariants."""

import asyncio
import contextlib
import itertools
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
import websockets
from websockets.asyncio.client import ClientConnection

RETRY_PAUSE_S = 0.2
FINAL_TYPES = {"processing_result_received"}
TERMINAL = {"completed", "failed", "cancelled"}


def _encode(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


async def _connect(url: str) -> ClientConnection:
    return await websockets.connect(url, compression=None, max_size=None, open_timeout=5)


@dataclass
class SimDrone:
    """Answers each task after `work_s` (or the task's own `input_data.work_s`), never answers a
    task whose input_data says `silent` (so it times out), fails some on purpose, and drops its
    connection at random when `drop_probability` is set, to exercise redelivery."""

    gateways: list[str]
    drone_id: str
    capacity: int = 1
    work_s: float = 0.01
    fail_every: int = 0
    drop_probability: float = 0.0
    seed: int = 0
    deliveries: Counter[str] = field(default_factory=Counter)
    """Distinct attempts of each task this drone was sent."""
    _attempts_seen: set[tuple[str, int]] = field(default_factory=set)
    answered: set[str] = field(default_factory=set)
    max_held: int = 0
    connections: int = 0
    over_capacity: list[tuple[str, list[str]]] = field(default_factory=list)
    cancelled: set[str] = field(default_factory=set)
    silent: set[str] = field(default_factory=set)
    """Tasks this drone never answers (to force timeouts)."""

    async def run(self, stop: asyncio.Event) -> None:
        rng = random.Random(self.seed)
        for index in itertools.count():
            if stop.is_set():
                return
            gateway = self.gateways[index % len(self.gateways)]
            url = f"{gateway}/ws/drone/{self.drone_id}?capacity={self.capacity}"
            try:
                connection = await _connect(url)
            except (OSError, websockets.InvalidHandshake, TimeoutError):
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            self.connections += 1
            try:
                await self._session(connection, stop, rng)
            except websockets.ConnectionClosed:
                pass
            finally:
                await connection.close()
            await asyncio.sleep(RETRY_PAUSE_S * rng.random())

    async def _session(
        self, connection: ClientConnection, stop: asyncio.Event, rng: random.Random
    ) -> None:
        held: set[str] = set()
        dropped: set[str] = set()  # task_cancelled by the server in this session
        workers: set[asyncio.Task[None]] = set()
        stopping = asyncio.create_task(stop.wait())

        def start_work(task_id: str, work_s: float) -> None:
            worker = asyncio.create_task(self._work(connection, task_id, held, work_s))
            workers.add(worker)
            worker.add_done_callback(workers.discard)

        try:
            while True:
                receiving = asyncio.create_task(connection.recv())
                done, _ = await asyncio.wait(
                    {receiving, stopping}, return_when=asyncio.FIRST_COMPLETED
                )
                if stopping in done:
                    receiving.cancel()
                    return
                frame = orjson.loads(receiving.result())
                kind = frame.get("type")
                if kind == "processing_task":
                    task_id = frame["task_id"]
                    self._count_delivery(task_id, frame["attempt"], held)
                    hints = frame["task_data"]["input_data"]
                    if task_id in self.silent or hints.get("silent"):
                        continue
                    if self.drop_probability and rng.random() < self.drop_probability:
                        return  # drop the link with this task unfinished
                    start_work(task_id, float(hints.get("work_s", self.work_s)))
                elif kind == "task_cancelled":
                    held.discard(frame["task_id"])
                    dropped.add(frame["task_id"])
                    self.cancelled.add(frame["task_id"])
                elif _asks_for_the_result_again(frame) and frame["task_id"] not in dropped:
                    # One whose result crossed the server's task_cancelled is not retried: the
                    # server no longer counts it against our capacity, so neither may we.
                    held.add(frame["task_id"])
                    start_work(frame["task_id"], 0.3)
        finally:
            stopping.cancel()
            for worker in workers:
                worker.cancel()

    def _count_delivery(self, task_id: str, attempt: int, held: set[str]) -> None:
        # A resumed frame re-sends a delivery after a reconnect: a delivery is an attempt.
        if (task_id, attempt) not in self._attempts_seen:
            self._attempts_seen.add((task_id, attempt))
            self.deliveries[task_id] += 1
        held.add(task_id)
        self.max_held = max(self.max_held, len(held))
        if len(held) > self.capacity:
            self.over_capacity.append((task_id, sorted(held)))

    async def _work(
        self, connection: ClientConnection, task_id: str, held: set[str], work_s: float
    ) -> None:
        progress = {"task_id": task_id, "status": "processing", "additional_data": {"progress": 50}}
        with contextlib.suppress(websockets.ConnectionClosed):
            await connection.send(_encode({"type": "task_status_update", "data": progress}))
        await asyncio.sleep(work_s)
        if task_id not in held:
            return  # cancelled or timed out meanwhile
        number = int(task_id[-6:], 16)
        success = not (self.fail_every and number % self.fail_every == 0)
        held.discard(task_id)
        with contextlib.suppress(websockets.ConnectionClosed):
            await connection.send(
                _encode(
                    {
                        "type": "processing_result",
                        "data": {
                            "task_id": task_id,
                            "drone_id": self.drone_id,
                            "result_data": {"by": self.drone_id} if success else {},
                            "processing_time": self.work_s,
                            "success": success,
                            "error_message": None if success else "simulated failure",
                        },
                    }
                )
            )
            self.answered.add(task_id)


def _asks_for_the_result_again(frame: dict[str, Any]) -> bool:
    return (
        frame.get("type") == "error"
        and frame.get("code") == "unavailable"
        and frame.get("message_type") == "processing_result"
    )


@dataclass
class SimApp:
    """Submits tasks over its socket with idempotency keys, so a submission lost to a crash can
    be resent without creating a second task, and records every final state it is told."""

    gateways: list[str]
    app_id: str
    task_ids: dict[str, str] = field(default_factory=dict)
    """idempotency key → task id"""
    finals: dict[str, dict[str, Any]] = field(default_factory=dict)
    final_count: Counter[str] = field(default_factory=Counter)
    foreign: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0
    _connection: ClientConnection | None = None
    _connected: asyncio.Event = field(default_factory=asyncio.Event)
    _created: dict[str, asyncio.Future[str]] = field(default_factory=dict)
    _progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def run(self, stop: asyncio.Event) -> None:
        for index in itertools.count():
            if stop.is_set():
                return
            url = f"{self.gateways[index % len(self.gateways)]}/ws/application/{self.app_id}"
            try:
                connection = await _connect(url)
            except (OSError, websockets.InvalidHandshake, TimeoutError):
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            self.connections += 1
            self._connection = connection
            self._connected.set()
            try:
                await self._read(connection, stop)
            except websockets.ConnectionClosed:
                pass
            finally:
                self._connected.clear()
                self._connection = None
                await connection.close()

    async def _read(self, connection: ClientConnection, stop: asyncio.Event) -> None:
        stopping = asyncio.create_task(stop.wait())
        try:
            while True:
                receiving = asyncio.create_task(connection.recv())
                done, _ = await asyncio.wait(
                    {receiving, stopping}, return_when=asyncio.FIRST_COMPLETED
                )
                if stopping in done:
                    receiving.cancel()
                    return
                frame = orjson.loads(receiving.result())
                await self._on_frame(frame)
        finally:
            stopping.cancel()

    async def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "task_created":
            future = self._created.get(frame["request_id"])
            if future is not None and not future.done():
                future.set_result(frame["task_id"])
            return
        if "app_id" in frame and frame["app_id"] != self.app_id:
            self.foreign.append(frame)
        final = kind in FINAL_TYPES or (
            kind == "task_status_update" and frame.get("status") in TERMINAL
        )
        if final:
            self.finals[frame["task_id"]] = frame
            self.final_count[frame["task_id"]] += 1
            async with self._progress:
                self._progress.notify_all()

    async def submit(self, key: str, body: dict[str, Any], timeout_s: float = 3.0) -> str:
        """Submit until the server confirms; resending the same key never makes a second task."""
        while True:
            await self._connected.wait()
            connection = self._connection
            future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._created[key] = future
            try:
                assert connection is not None
                await connection.send(
                    _encode(
                        {
                            "type": "processing_task",
                            "request_id": key,
                            "data": {**body, "idempotency_key": key},
                        }
                    )
                )
                task_id = await asyncio.wait_for(future, timeout_s)
            except (websockets.ConnectionClosed, TimeoutError):
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            finally:
                self._created.pop(key, None)
            self.task_ids[key] = task_id
            return task_id

    async def cancel(self, task_id: str) -> None:
        await self._connected.wait()
        if self._connection is not None:
            with contextlib.suppress(websockets.ConnectionClosed):
                await self._connection.send(
                    _encode({"type": "cancel_task", "data": {"task_id": task_id}})
                )

    async def wait_all_final(self, timeout_s: float) -> set[str]:
        """Waits until every submitted task has a final notification; returns those missing."""
        expected = set(self.task_ids.values())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s), self._progress:
                while not expected <= set(self.finals):
                    await self._progress.wait()
        return expected - set(self.finals)
