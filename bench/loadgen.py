"""Load generator: applications and simulated drones drive droneflow over its public WebSocket
protocol, closed loop; prints tasks/s, round-trip latency percentiles, server CPU and peak RSS.

    python bench/loadgen.py [--apps 4] [--drones 16] [--capacity 4] [--tasks 20000]
                            [--inflight 200] [--repeat 3] [--url http://host:port ...]

Without --url it starts `droneflow serve` on a free port with a fresh data directory and stops
it with SIGTERM at the end. With several --url (gateways of one deployment), application i and
drone i connect to url i mod n. The exit status is 1 when a task was lost or the server misbehaved.
See bench/README.md for how to read the figures.
"""

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

PRIORITIES = range(1, 6)
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
now = time.monotonic  # CLOCK_MONOTONIC is system-wide, so generator processes share it

# --- process figures from /proc ------------------------------------------------------------


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all threads."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # comm may hold spaces; fields start at 3
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def box_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, all cores, from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    total = sum(ticks[:8])  # guest time is already counted in user
    return (total - idle) / CLOCK_TICKS_PER_S, total / CLOCK_TICKS_PER_S


def memory_mib(pid: int, key: str) -> float:
    """`VmHWM` (peak resident set) or `VmRSS` from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


# --- the server under test -------------------------------------------------------------------


@dataclass
class Target:
    urls: list[str]  # http://host:port of each gateway; clients are dealt round-robin
    pids: list[int]  # local server processes to measure; empty when unknown
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return self.urls[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _healthy(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no env proxies
    try:
        with opener.open(url + "/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_healthy(target: Target, timeout_s: float) -> None:
    deadline = now() + timeout_s
    for url in target.urls:
        while not _healthy(url):
            if target.process is not None and target.process.poll() is not None:
                raise SystemExit(
                    f"server exited with {target.process.returncode}:\n{_log_tail(target)}"
                )
            if now() > deadline:
                raise SystemExit(f"{url}/healthz not 200 after {timeout_s:.0f} s")
            time.sleep(0.05)


def _server_command() -> list[str]:
    script = Path(sys.executable).parent / "droneflow"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "droneflow.cli"]


@contextlib.contextmanager
def started_server(args: argparse.Namespace) -> Iterator[Target]:
    """`droneflow serve` on a free port and a fresh DRONEFLOW_DATA_DIR; SIGTERM on exit."""
    data_dir = Path(tempfile.mkdtemp(prefix="droneflow-bench-"))
    port = _free_port()
    env = {**os.environ, "DRONEFLOW_DATA_DIR": str(data_dir)}
    if args.broker_url:
        env["DRONEFLOW_BROKER_URL"] = args.broker_url
    if args.store_url:
        env["DRONEFLOW_STORE_URL"] = args.store_url
    log_path = data_dir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*_server_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    target = Target([f"http://127.0.0.1:{port}"], [process.pid], process, log_path)
    try:
        yield target
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if args.keep_data:
            print(f"data and server log kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


def stop_server(target: Target, timeout_s: float = 30) -> tuple[int | None, float]:
    """SIGTERM, then wait; returns (exit code or None when it had to be killed, seconds)."""
    assert target.process is not None
    started = now()
    target.process.send_signal(signal.SIGTERM)
    try:
        code: int | None = target.process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        target.process.kill()
        target.process.wait()
        code = None
    return code, now() - started


def _log_tail(target: Target, lines: int = 20) -> str:
    if target.log_path is None or not target.log_path.exists():
        return ""
    return "\n".join(target.log_path.read_text(errors="replace").splitlines()[-lines:])


def log_problems(target: Target) -> list[str]:
    if target.log_path is None or not target.log_path.exists():
        return []
    words = ("WARNING", "ERROR", "CRITICAL", "Traceback")
    text = target.log_path.read_text(errors="replace")
    return [line for line in text.splitlines() if any(word in line for word in words)]


# --- the simulated clients -----------------------------------------------------------------


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
        self.first_send = min(self.first_send, other.first_send)
        self.last_receive = max(self.last_receive, other.last_receive)


async def open_socket(url: str) -> ClientConnection:
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
        self.pending: dict[str, tuple[float, int]] = {}
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

    async def run_phase(self, phase: str, tasks: int) -> None:
        self.pending.clear()  # anything left from a timed-out phase was counted lost there
        self.result = PhaseResult()
        self.slots = asyncio.Semaphore(self.spec.inflight)
        self.drained.clear()
        self.all_sent = False
        result, pending, frames, ws = self.result, self.pending, self.frames, self.ws
        fixed, rand, drones = self.spec.priority, self.rng.random, len(frames)
        result.first_send = now()
        with contextlib.suppress(ConnectionClosed):  # the reader records why
            for i in range(tasks):
                await self.slots.acquire()
                if self.broken:
                    break
                priority = fixed or int(rand() * 5) + 1
                prefix, suffix = frames[(self.offset + i) % drones][priority - 1]
                bench_id = f"{phase}{i}"
                pending[bench_id] = (now(), priority)
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
        entry = self.pending.pop(bench_id, None)
        if entry is None:
            result.unexpected += 1
            return
        received = now()
        result.latencies_s[entry[1] - 1].append(received - entry[0])
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
                open_socket(f"{self._ws_url(d, 'drone')}/ws/drone/{d}{drone_query}")
                for d in spec.drone_ids
            )
        )
        self.drones = [Drone(ws, d) for ws, d in zip(drone_ws, spec.drone_ids, strict=True)]
        app_ws = await asyncio.gather(
            *(open_socket(f"{self._ws_url(a, 'app')}/ws/application/{a}") for a in spec.app_ids)
        )
        # App i starts its round-robin over the drones at drone i (ids end in their index).
        offsets = [int(a.rsplit("app", 1)[1]) for a in spec.app_ids]
        self.apps = [
            Application(ws, a, spec, offset)
            for ws, a, offset in zip(app_ws, spec.app_ids, offsets, strict=True)
        ]

    async def run_phase(self, phase: str, quotas: dict[str, int], stall_s: float) -> PhaseResult:
        before = [(d.tasks, d.redelivered, d.cancelled) for d in self.drones]
        runs = [asyncio.create_task(a.run_phase(phase, quotas[a.app_id])) for a in self.apps]
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
        for client in [*self.apps, *self.drones]:
            await client.ws.close()
        await asyncio.gather(
            *(a.reader for a in self.apps),
            *(d.serving for d in self.drones),
            return_exceptions=True,
        )


# --- generator processes -------------------------------------------------------------------


class InProcessGenerator:
    def __init__(self, spec: FleetSpec) -> None:
        self.fleet = Fleet(spec)
        self.pids = [os.getpid()]

    async def open(self) -> None:
        await self.fleet.open()

    async def run_phase(self, phase: str, quotas: dict[str, int], stall_s: float) -> PhaseResult:
        return await self.fleet.run_phase(phase, quotas, stall_s)

    async def close(self) -> None:
        await self.fleet.close()


class ChildProcessGenerator:
    """One Fleet per child process, driven over a pipe: (phase, quotas, stall_s) → result."""

    def __init__(self, specs: list[FleetSpec]) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.children = []
        for spec in specs:
            mine, theirs = context.Pipe()
            child = context.Process(target=_child_main, args=(theirs, spec), daemon=True)
            child.start()
            self.pipes.append(mine)
            self.children.append(child)
        self.pids = [os.getpid(), *(child.pid for child in self.children if child.pid)]

    async def _ask_all(self, message: Any) -> list[Any]:
        for pipe in self.pipes:
            pipe.send(message)
        return await self._answers()

    async def _answers(self) -> list[Any]:
        answers = await asyncio.gather(*(asyncio.to_thread(pipe.recv) for pipe in self.pipes))
        for answer in answers:
            if isinstance(answer, str):
                raise SystemExit(f"generator process failed:\n{answer}")
        return answers

    async def open(self) -> None:
        await self._answers()  # each child says "ready" (None) once connected

    async def run_phase(self, phase: str, quotas: dict[str, int], stall_s: float) -> PhaseResult:
        total = PhaseResult()
        for result in await self._ask_all((phase, quotas, stall_s)):
            total.merge(result)
        return total

    async def close(self) -> None:
        await self._ask_all(None)
        for child in self.children:
            child.join(10)


def _child_main(pipe: Connection, spec: FleetSpec) -> None:
    run_loop(lambda: _child(pipe, spec))


async def _child(pipe: Connection, spec: FleetSpec) -> None:
    fleet = Fleet(spec)
    try:
        await fleet.open()
        pipe.send(None)
        while (command := await asyncio.to_thread(pipe.recv)) is not None:
            pipe.send(await fleet.run_phase(*command))
        await fleet.close()
        pipe.send(None)
    except BaseException:
        pipe.send(traceback.format_exc())
        raise


def run_loop(main: Callable[[], Awaitable[Any]]) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


# --- the measurement -----------------------------------------------------------------------


def percentile_ms(sorted_s: list[float], q: float) -> float:
    """Nearest rank: the smallest latency with at least q of the latencies at or below it."""
    if not sorted_s:
        return math.nan
    return sorted_s[max(0, math.ceil(q * len(sorted_s)) - 1)] * 1000


@dataclass
class CpuSample:
    """CPU seconds so far of the server, of the generator, and of the whole machine."""

    at: float
    server_s: float | None
    generator_s: float
    box_busy_s: float
    box_total_s: float

    @classmethod
    def take(cls, server_pids: list[int], generator_pids: list[int]) -> "CpuSample":
        try:
            server_s = sum(cpu_s(pid) for pid in server_pids) if server_pids else None
        except OSError:  # the server is gone
            server_s = None
        return cls(now(), server_s, sum(cpu_s(pid) for pid in generator_pids), *box_cpu_s())


@dataclass
class Run:
    """One measured phase. CPU figures are % of one core over the phase (200% = both cores)."""

    result: PhaseResult
    tasks_per_s: float
    p50: float
    p95: float
    p99: float
    max: float
    server_cpu_pct: float | None
    gen_cpu_pct: float
    others_cpu_pct: float  # everything else on the machine: other tenants, kernel threads
    server_us_per_task: float | None  # server CPU per task: comparable across noisy runs

    @classmethod
    def of(cls, result: PhaseResult, before: CpuSample, after: CpuSample) -> "Run":
        latencies = sorted(x for per_priority in result.latencies_s for x in per_priority)
        span_s = result.last_receive - result.first_send
        wall_s = after.at - before.at
        server_pct = server_us = None
        if after.server_s is not None and before.server_s is not None:
            server_pct = 100 * (after.server_s - before.server_s) / wall_s
            if result.received:
                server_us = 1e6 * (after.server_s - before.server_s) / result.received
        gen_pct = 100 * (after.generator_s - before.generator_s) / wall_s
        # /proc/stat ticks are per core; scale so that one busy core is 100%.
        cores = (after.box_total_s - before.box_total_s) / wall_s
        box_pct = (
            100
            * cores
            * (after.box_busy_s - before.box_busy_s)
            / (after.box_total_s - before.box_total_s)
        )
        return cls(
            result=result,
            tasks_per_s=result.received / span_s if result.received and span_s > 0 else 0.0,
            p50=percentile_ms(latencies, 0.50),
            p95=percentile_ms(latencies, 0.95),
            p99=percentile_ms(latencies, 0.99),
            max=percentile_ms(latencies, 1.0),
            server_cpu_pct=server_pct,
            gen_cpu_pct=gen_pct,
            others_cpu_pct=max(0.0, box_pct - gen_pct - (server_pct or 0)),
            server_us_per_task=server_us,
        )

    def line(self) -> str:
        r = self.result
        server = "?" if self.server_cpu_pct is None else f"{self.server_cpu_pct:.0f}%"
        text = (
            f"{r.received} tasks, {self.tasks_per_s:,.0f} tasks/s | latency ms p50 {self.p50:.1f}"
            f" p95 {self.p95:.1f} p99 {self.p99:.1f} max {self.max:.1f} | sent {r.sent}"
            f" received {r.received} lost {r.lost}"
            f" | cpu server {server} gen {self.gen_cpu_pct:.0f}%"
            f" others {self.others_cpu_pct:.0f}%"
        )
        extras = {
            "unsent": r.unsent,
            "connections lost": r.connections_lost,
            "unexpected": r.unexpected,
            "failed": r.failed,
            "redelivered": r.redelivered,
            "cancelled": r.cancelled,
            "errors": len(r.errors),
        }
        return text + "".join(f" | {k} {v}" for k, v in extras.items() if v)


def split(total: int, ids: list[str]) -> dict[str, int]:
    share, extra = divmod(total, len(ids))
    return {app_id: share + (i < extra) for i, app_id in enumerate(ids)}


def fleet_specs(args: argparse.Namespace, target: Target) -> list[FleetSpec]:
    tag = secrets.token_hex(3)  # fresh ids: nothing a previous run left queued reaches us
    app_ids = [f"bench{tag}app{i}" for i in range(args.apps)]
    drone_ids = [f"bench{tag}drone{i}" for i in range(args.drones)]
    ws_urls = ["ws" + url.removeprefix("http") for url in target.urls]
    return [
        FleetSpec(
            ws_urls=ws_urls,
            app_ids=app_ids[k :: args.processes],
            drone_ids=drone_ids[k :: args.processes],
            target_drone_ids=drone_ids,
            capacity=args.capacity,
            inflight=args.inflight,
            priority=args.priority,
            seed=args.seed + 1000 * k,
        )
        for k in range(args.processes)
    ]


async def measure(args: argparse.Namespace, target: Target) -> list[Run]:
    specs = fleet_specs(args, target)
    all_apps = [a for spec in specs for a in spec.app_ids]
    generator: InProcessGenerator | ChildProcessGenerator = (
        InProcessGenerator(specs[0]) if args.processes == 1 else ChildProcessGenerator(specs)
    )
    await generator.open()
    runs: list[Run] = []
    try:
        if args.warmup:
            started = now()
            warm = await generator.run_phase("w", split(args.warmup, all_apps), args.stall_s)
            print(
                f"warm-up: {warm.received}/{args.warmup} tasks in {now() - started:.2f} s"
                + (f", lost {warm.lost}" if warm.lost else "")
            )
        for k in range(args.repeat):
            before = CpuSample.take(target.pids, generator.pids)
            result = await generator.run_phase(f"r{k}.", split(args.tasks, all_apps), args.stall_s)
            runs.append(Run.of(result, before, CpuSample.take(target.pids, generator.pids)))
            print(f"run {k + 1}/{args.repeat}: {runs[-1].line()}")
            for error in result.errors[:5]:
                print(f"  {error}")
            if result.connections_lost:
                print(f"aborted: {result.connections_lost} connections lost")
                break
    finally:
        await generator.close()
    return runs


def summarize(runs: list[Run]) -> bool:
    """Print the medians and the latency per priority; True when every task came back."""

    def median(values: list[float]) -> float:
        return statistics.median(values) if values else math.nan

    server = [r.server_cpu_pct for r in runs if r.server_cpu_pct is not None]
    per_task = [r.server_us_per_task for r in runs if r.server_us_per_task is not None]
    server_text = f"{median(server):.0f}% ({median(per_task):.0f} µs/task)" if per_task else "?"
    print(
        f"median of {len(runs)}: {median([r.tasks_per_s for r in runs]):,.0f} tasks/s"
        f" | latency ms p50 {median([r.p50 for r in runs]):.1f}"
        f" p95 {median([r.p95 for r in runs]):.1f} p99 {median([r.p99 for r in runs]):.1f}"
        f" | cpu server {server_text} gen {median([r.gen_cpu_pct for r in runs]):.0f}%"
        f" others {median([r.others_cpu_pct for r in runs]):.0f}%"
    )
    per_priority = [
        sorted(x for r in runs for x in r.result.latencies_s[p - 1]) for p in PRIORITIES
    ]
    print(
        "latency ms by priority (all runs): "
        + ", ".join(
            f"{p}: p50 {percentile_ms(lat, 0.5):.1f} p99 {percentile_ms(lat, 0.99):.1f}"
            for p, lat in zip(PRIORITIES, per_priority, strict=True)
            if lat
        )
    )
    return all(r.result.lost == r.result.unsent == 0 and not r.result.errors for r in runs)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add(
        "--url",
        action="append",
        help="an already running server (http://host:port) instead of starting one; may repeat"
        " (gateways of one deployment: app i and drone i use url i mod n)",
    )
    add("--broker-url", help="DRONEFLOW_BROKER_URL for the started server")
    add("--store-url", help="DRONEFLOW_STORE_URL for the started server")
    add(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        help="with --url: a local server process to measure (CPU, RSS); may repeat",
    )
    add("--apps", type=int, default=4, help="applications (default 4)")
    add("--drones", type=int, default=16, help="simulated drones (default 16)")
    add("--capacity", type=int, default=4, help="tasks a drone holds at once (default 4)")
    add("--tasks", type=int, default=20_000, help="tasks per measured run (default 20000)")
    add("--warmup", type=int, default=500, help="tasks before measuring (default 500)")
    add("--inflight", type=int, default=200, help="unanswered tasks per app (default 200)")
    add("--repeat", type=int, default=3, help="measured runs (default 3)")
    add("--priority", type=int, choices=PRIORITIES, help="fixed priority (default: uniform 1-5)")
    add("--processes", type=int, default=1, help="generator processes (default 1)")
    add("--stall-s", type=float, default=60, help="give up after this long without a result")
    add("--startup-timeout-s", type=float, default=30)
    add("--seed", type=int, default=1)
    add("--keep-data", action="store_true", help="keep the started server's data and log")
    add("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.processes > min(args.apps, args.drones):
        parser.error("--processes may not exceed --apps or --drones")
    if args.url and (args.broker_url or args.store_url):
        parser.error("--broker-url/--store-url configure the started server; not with --url")
    return args


def report_server(target: Target) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for pid in target.pids:
        with contextlib.suppress(OSError):
            figures[f"pid {pid}"] = {
                "peak_rss_mib": round(memory_mib(pid, "VmHWM"), 1),
                "rss_mib": round(memory_mib(pid, "VmRSS"), 1),
                "cpu_s": round(cpu_s(pid), 2),
            }
    for name, f in figures.items():
        print(
            f"server {name}: peak RSS {f['peak_rss_mib']:.1f} MiB (now {f['rss_mib']:.1f}),"
            f" {f['cpu_s']:.1f} CPU s in total"
        )
    return figures


def write_json(args: argparse.Namespace, runs: list[Run], server: dict[str, Any]) -> None:
    figures = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "runs": [
            {k: v for k, v in vars(r).items() if k != "result"}
            | {"lost": r.result.lost, "unsent": r.result.unsent, "errors": r.result.errors}
            for r in runs
        ],
        "server": server,
    }
    args.json.write_text(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.url:
            target = Target([url.rstrip("/") for url in args.url], args.server_pid)
        else:
            target = stack.enter_context(started_server(args))
        wait_healthy(target, args.startup_timeout_s)
        mode = f"started, pid {target.pids[0]}" if target.process else "external"
        print(
            f"droneflow loadgen → {', '.join(target.urls)} ({mode})"
            f" | apps {args.apps} drones {args.drones}"
            f" capacity {args.capacity} inflight/app {args.inflight} | {args.tasks} tasks x"
            f" {args.repeat} after {args.warmup} warm-up | priority {args.priority or '1-5'}"
            f" | {args.processes} generator process(es)"
        )
        runs = run_loop(lambda: measure(args, target))
        complete = summarize(runs)
        server = report_server(target)
        healthy = True
        if target.process is not None:
            code, took_s = stop_server(target)
            healthy = code == 0
            print(f"server stopped by SIGTERM in {took_s:.1f} s, exit code {code}")
            problems = log_problems(target)
            if problems:
                print(f"server log: {len(problems)} warning/error lines, first ones:")
                for line in problems[:5]:
                    print(f"  {line}")
        if args.json:
            write_json(args, runs, server)
    return 0 if complete and healthy else 1


if __name__ == "__main__":
    sys.exit(main())
