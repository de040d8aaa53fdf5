"""The simulated clients: applications that submit tasks closed loop and drones that answer
them at once, over the public WebSocket protocol; a Fleet is those of one generator process."""

import asyncio
import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from procfs import now
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

PRIORITIES = range(1, 6)


@dataclass
class FleetSpec:
    """What one generator process runs. Picklable: it crosses to child processes."""

    ws_urls: list[str]  # app i and drone i connect to ws_urls[i % len(ws_urls)]
    app_ids: list[str]
    drone_ids: list[str]  # the drones this process simulates
    target_drone_ids: list[str]  # every drone, the apps spread their tasks over them
    capacity: int
    inflight: int
    priority: int | None
    seed: int
    tokens: dict[str, str] = field(default_factory=dict)  # client id → token (--auth)


@dataclass
class PhaseResult:
    latencies_s: list[list[float]] = field(default_factory=lambda: [[] for _ in PRIORITIES])
    sent: int = 0
    received: int = 0
    lost: int = 0  # sent, and no result came back
    unsent: int = 0  # never sent: the connection closed or the phase stalled
    connections_lost: int = 0
    unexpected: int = 0  # results nobody waits for: duplicates, or late from an earlier phase
    failed: int = 0  # results with success false, or terminal `failed` status updates
    errors: list[str] = field(default_factory=list)  # `error` frames and dropped connections
    first_send: float = math.inf
    last_receive: float = -math.inf
    drone_tasks: int = 0
    redelivered: int = 0
    cancelled: int = 0
    # (app_id, bench_id, sent, received) on the wall clock, which the server's timestamps
    # share: with the store's created/delivered/finished times they split round trips into legs.
    wall_times: list[tuple[str, str, float, float]] = field(default_factory=list)

    def merge(self, other: "PhaseResult") -> None:
        for mine, theirs in zip(self.latencies_s, other.latencies_s, strict=True):
            mine.extend(theirs)
        for name in (
            "sent",
            "received",
            "lost",
            "unsent",
            "connections_lost",
            "unexpected",
            "failed",
            "drone_tasks",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.redelivered += other.redelivered
        self.cancelled += other.cancelled
        self.errors.extend(other.errors)
        self.wall_times.extend(other.wall_times)
        self.first_send = min(self.first_send, other.first_send)
        self.last_receive = max(self.last_receive, other.last_receive)


async def open_socket(url: str, token: str | None = None) -> ClientConnection:
    # No per-message deflate (CPU on both sides), no keepalive pings: a stalled server shows up
    # as latency and a stall report, not as a closed socket.
    ws = await connect(
        url,
        compression=None,
        max_size=None,
        max_queue=1024,
        ping_interval=None,
        proxy=None,
        open_timeout=30,
        additional_headers={"Authorization": f"Bearer {token}"} if token else None,
    )
    welcome = orjson.loads(await ws.recv(decode=False))
    if welcome.get("type") != "connection_established":
        raise SystemExit(f"{url}: expected connection_established, got {welcome}")
    return ws


class Application:
    """Submits tasks with at most `inflight` unanswered; matches results by `bench_id`."""

    def __init__(self, ws: ClientConnection, app_id: str, spec: FleetSpec, offset: int) -> None:
        self.ws = ws
        self.app_id = app_id
        self.spec = spec
        self.offset = offset
        self.rng = random.Random(spec.seed + offset)
        # The frame is built once per (drone, priority); only the bench_id changes per task.
        self.frames: list[list[tuple[bytes, bytes]]] = [
            [self._template(drone_id, priority) for priority in PRIORITIES]
            for drone_id in spec.target_drone_ids
        ]
        self.pending: dict[str, tuple[float, int, float]] = {}
        self.result = PhaseResult()
        self.slots = asyncio.Semaphore(spec.inflight)
        self.drained = asyncio.Event()
        self.all_sent = False
        self.broken = False  # the connection closed: no further phase can use this app
        self.reader = asyncio.create_task(self._read())

    def _template(self, drone_id: str, priority: int) -> tuple[bytes, bytes]:
        data = {
            "app_id": self.app_id,
            "drone_id": drone_id,
            "task_type": "bench",
            "input_data": {"image_url": "https://example.com/image.jpg", "bench_id": "@"},
            "priority": priority,
        }
        prefix, suffix = orjson.dumps({"type": "processing_task", "data": data}).split(b'"@"')
        return prefix + b'"', b'"' + suffix

    async def run_phase(self, phase: str, tasks: int, rate_per_s: float | None = None) -> None:
        self.pending.clear()  # anything left from a timed-out phase was counted lost there
        self.result = PhaseResult()
        self.slots = asyncio.Semaphore(self.spec.inflight)
        self.drained.clear()
        self.all_sent = False
        result, pending, frames, ws = self.result, self.pending, self.frames, self.ws
        fixed, rand, drones = self.spec.priority, self.rng.random, len(frames)
        result.first_send = next_send = now()
        # Paced from a schedule, not from the last send: a late send does not push back the
        # ones after it, so the offered rate is the cap whatever the event loop's jitter.
        interval_s = 1 / rate_per_s if rate_per_s else 0.0
        with contextlib.suppress(ConnectionClosed):  # the reader records why
            for i in range(tasks):
                await self.slots.acquire()
                if self.broken:
                    break
                if interval_s:
                    if (wait_s := next_send - now()) > 0:
                        await asyncio.sleep(wait_s)
                    next_send += interval_s
                priority = fixed or int(rand() * 5) + 1
                prefix, suffix = frames[(self.offset + i) % drones][priority - 1]
                bench_id = f"{phase}{i}"
                pending[bench_id] = (now(), priority, time.time())
                await ws.send(prefix + bench_id.encode() + suffix, text=True)
                result.sent += 1
        self.all_sent = True
        if not pending or self.broken:
            self.drained.set()
        await self.drained.wait()

    async def _read(self) -> None:
        recv, loads, pending = self.ws.recv, orjson.loads, self.pending
        try:
            while True:
                message = loads(await recv(decode=False))
                kind = message.get("type")
                if kind == "processing_result_received":
                    self._on_result(message)
                elif kind == "error":
                    self.result.errors.append(f"{self.app_id}: error frame {message}")
                elif kind == "task_status_update" and message.get("status") == "failed":
                    self.result.failed += 1  # no result will follow: reported as lost
                if self.all_sent and not pending:
                    self.drained.set()
        except ConnectionClosed as exc:
            self.result.errors.append(f"{self.app_id}: connection closed: {exc}")
            self.broken = True
            self.drained.set()
            self.slots.release()  # wake the sender so it sees `broken`

    def _on_result(self, message: dict[str, Any]) -> None:
        result = self.result
        bench_id = (message.get("result_data") or {}).get("bench_id")
        entry = self.pending.pop(bench_id, None) if isinstance(bench_id, str) else None
        if entry is None:
            result.unexpected += 1
            return
        received = now()
        result.latencies_s[entry[1] - 1].append(received - entry[0])
        result.wall_times.append((self.app_id, bench_id, entry[2], entry[2] + received - entry[0]))
        result.received += 1
        result.last_receive = received
        if message.get("success") is False:
            result.failed += 1
        self.slots.release()


class Drone:
    """Answers every task at once with a small successful result echoing `bench_id`."""

    def __init__(self, ws: ClientConnection, drone_id: str) -> None:
        self.ws = ws
        self.drone_id = drone_id
        self.tasks = self.redelivered = self.cancelled = 0
        self.closed: str | None = None
        self.serving = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        recv, send, loads, dumps = self.ws.recv, self.ws.send, orjson.loads, orjson.dumps
        try:
            while True:
                message = loads(await recv(decode=False))
                kind = message.get("type")
                if kind != "processing_task":
                    self.cancelled += kind == "task_cancelled"
                    continue
                self.tasks += 1
                self.redelivered += message.get("attempt", 1) > 1
                input_data = (message.get("task_data") or {}).get("input_data") or {}
                reply = {
                    "type": "processing_result",
                    "data": {
                        "task_id": message["task_id"],
                        "drone_id": self.drone_id,
                        "result_data": {"bench_id": input_data.get("bench_id")},
                        "processing_time": 0.001,
                        "success": True,
                    },
                }
                await send(dumps(reply), text=True)
        except ConnectionClosed as exc:
            self.closed = f"{self.drone_id}: connection closed: {exc}"


class Fleet:
    """The apps and drones of one generator process."""

    def __init__(self, spec: FleetSpec) -> None:
        self.spec = spec
        self.apps: list[Application] = []
        self.drones: list[Drone] = []

    def _ws_url(self, client_id: str, kind: str) -> str:
        urls = self.spec.ws_urls  # ids end in their index
        return urls[int(client_id.rsplit(kind, 1)[1]) % len(urls)]

    async def open(self) -> None:
        spec = self.spec
        drone_query = f"?capacity={spec.capacity}"
        drone_ws = await asyncio.gather(
            *(
                open_socket(
                    f"{self._ws_url(d, 'drone')}/ws/drone/{d}{drone_query}", spec.tokens.get(d)
                )
                for d in spec.drone_ids
            )
        )
        self.drones = [Drone(ws, d) for ws, d in zip(drone_ws, spec.drone_ids, strict=True)]
        app_ws = await asyncio.gather(
            *(
                open_socket(f"{self._ws_url(a, 'app')}/ws/application/{a}", spec.tokens.get(a))
                for a in spec.app_ids
            )
        )
        # App i starts its round-robin over the drones at drone i (ids end in their index).
        offsets = [int(a.rsplit("app", 1)[1]) for a in spec.app_ids]
        self.apps = [
            Application(ws, a, spec, offset)
            for ws, a, offset in zip(app_ws, spec.app_ids, offsets, strict=True)
        ]

    async def run_phase(
        self, phase: str, quotas: dict[str, int], stall_s: float, app_rate_per_s: float | None
    ) -> PhaseResult:
        before = [(d.tasks, d.redelivered, d.cancelled) for d in self.drones]
        runs = [
            asyncio.create_task(a.run_phase(phase, quotas[a.app_id], app_rate_per_s))
            for a in self.apps
        ]
        await self._watch(runs, stall_s)
        total = PhaseResult()
        for app in self.apps:
            app.result.lost = len(app.pending)
            app.result.unsent = quotas[app.app_id] - app.result.sent
            app.result.connections_lost = app.broken
            total.merge(app.result)
        for drone, (tasks, redelivered, cancelled) in zip(self.drones, before, strict=True):
            total.drone_tasks += drone.tasks - tasks
            total.redelivered += drone.redelivered - redelivered
            total.cancelled += drone.cancelled - cancelled
            if drone.closed:
                total.errors.append(drone.closed)
                total.connections_lost += 1
        return total

    async def _watch(self, runs: list["asyncio.Task[None]"], stall_s: float) -> None:
        """Wait for every app; give up on the phase when no result arrived for `stall_s`."""
        progress, progress_at = -1, now()
        pending = set(runs)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=1.0)
            received = sum(a.result.received + a.result.unexpected for a in self.apps)
            if received != progress:
                progress, progress_at = received, now()
            elif now() - progress_at > stall_s:
                for run in pending:
                    run.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                missing = sum(len(a.pending) for a in self.apps)
                self.apps[0].result.errors.append(
                    f"stall: no result for {stall_s:.0f} s with {missing} tasks outstanding"
                )
                return

    async def close(self) -> None:
        clients: list[Application | Drone] = [*self.apps, *self.drones]
        for client in clients:
            await client.ws.close()
        await asyncio.gather(
            *(a.reader for a in self.apps),
            *(d.serving for d in self.drones),
            return_exceptions=True,
        )
