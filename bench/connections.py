"""Connections: server memory per idle drone socket, delivery latency with all of them connected,
and whether memory comes back when ids go away.

    python bench/connections.py [--drones 18000] [--processes 2] [--tasks 2000] [--cycles 3]
                                [--idle-s 15] [--url http://host:port --server-pid PID]

Without --url it starts `droneflow serve` on a free port with a fresh data directory and stops
it with SIGTERM at the end. Drones offer permessage-deflate, as the `websockets` client does by
default (`--compression none` to offer nothing). See bench/README.md for how to read the figures.
"""

import argparse
import asyncio
import contextlib
import math
import random
import secrets
import sys
import time

import orjson
from generators import run_loop
from idle_drones import IdleFleetProcesses, lift_open_file_limit
from procfs import cpu_s, memory_mib, now
from server_process import Target, started_server, stop_and_report, wait_healthy
from websockets.asyncio.client import ClientConnection, connect

SETTLE_S = 2.0  # after connecting or closing, before RSS is read: the server finishes its work
SLOW_S = 0.050  # issue 9's target for delivery p99: slower deliveries are listed in bursts
BURST_GAP_S = 0.5  # slow deliveries sent closer together than this are one stall


def _rss_mib(target: Target) -> float:
    time.sleep(SETTLE_S)
    return sum(memory_mib(pid, "VmRSS") for pid in target.pids)


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


async def _connect_generation(
    fleet: IdleFleetProcesses, tag: str, generation: int, drones: int
) -> list[str]:
    ids = [f"conn{tag}g{generation}d{i}" for i in range(drones)]
    k = len(fleet.pipes)
    started = now()
    answers = await fleet.ask([("connect", ids[i::k]) for i in range(k)])
    connected = sum(count for count, _ in answers)
    failures = [failure for _, some in answers for failure in some]
    print(f"  {connected}/{drones} connected in {now() - started:.1f} s", end="")
    print(f"; failures, first ones: {failures}" if failures else "")
    return ids if connected == drones else []


def _idle_cpu_ms_per_s(target: Target, idle_s: float) -> float:
    """Server CPU while every drone is connected and nothing is sent: the heartbeat's cost
    (presence, pings), measured in CPU rather than latency, which a busy box blurs."""
    time.sleep(SETTLE_S)
    before, started = sum(cpu_s(pid) for pid in target.pids), now()
    time.sleep(idle_s)
    return (sum(cpu_s(pid) for pid in target.pids) - before) * 1000 / (now() - started)


def _stalls(deliveries: list[tuple[float, float]], started: float) -> str:
    """Deliveries slower than SLOW_S, grouped by when they were sent: a periodic stall (a
    heartbeat's work) shows as bursts a heartbeat apart."""
    slow = sorted((sent - started, latency) for sent, latency in deliveries if latency > SLOW_S)
    bursts: list[list[tuple[float, float]]] = []
    for delivery in slow:
        if bursts and delivery[0] - bursts[-1][-1][0] < BURST_GAP_S:
            bursts[-1].append(delivery)
        else:
            bursts.append([delivery])
    return ", ".join(
        f"{b[0][0]:.1f} s ({len(b)}, max {max(lat for _, lat in b) * 1000:.0f} ms)" for b in bursts
    )


async def _deliveries(
    fleet: IdleFleetProcesses, ws_url: str, drone_ids: list[str], tasks: int, rate_per_s: float
) -> tuple[float, list[tuple[float, float]]]:
    """`tasks` tasks, each to a random drone, sent at `rate_per_s`: when the first was sent,
    and the (sent at, delivery time) of each."""
    app: ClientConnection = await connect(
        f"{ws_url}/ws/application/conn{secrets.token_hex(3)}app", proxy=None, max_size=None
    )
    drain = asyncio.create_task(_drain(app))
    rng = random.Random(1)
    started = now()
    for k in range(tasks):
        data = {
            "drone_id": rng.choice(drone_ids),
            "task_type": "bench",
            "input_data": {"sent_at": now()},
        }
        await app.send(orjson.dumps({"type": "processing_task", "data": data}), text=True)
        await asyncio.sleep(max(0.0, started + (k + 1) / rate_per_s - now()))
    latencies: list[tuple[float, float]] = []
    deadline = now() + 30
    while len(latencies) < tasks and now() < deadline:
        await asyncio.sleep(0.5)
        latencies += [lat for part in await fleet.ask_all(("latencies",)) for lat in part]
    await app.close()
    await drain
    return started, latencies


async def _drain(app: ClientConnection) -> None:
    with contextlib.suppress(Exception):
        async for _ in app:
            pass


async def measure(args: argparse.Namespace, target: Target) -> bool:
    ws_url = "ws" + target.url.removeprefix("http")
    compression = None if args.compression == "none" else "deflate"
    fleet = IdleFleetProcesses(args.processes, ws_url, compression)
    tag = secrets.token_hex(3)
    ok = True
    try:
        base = _rss_mib(target)
        print(f"server RSS before any drone: {base:.1f} MiB")
        print(f"generation 0: {args.drones} drones")
        ids = await _connect_generation(fleet, tag, 0, args.drones)
        plateaus = [_rss_mib(target)]
        per_socket_kb = (plateaus[0] - base) * 1024 / args.drones
        print(f"  RSS {plateaus[0]:.1f} MiB: {per_socket_kb:.1f} kB per idle socket")
        ok &= bool(ids)
        if ids and args.idle_s:
            cpu_ms = await asyncio.to_thread(_idle_cpu_ms_per_s, target, args.idle_s)
            print(f"  idle, all connected: server CPU {cpu_ms:.1f} ms/s over {args.idle_s:g} s")
        if ids and args.tasks:
            started, deliveries = await _deliveries(fleet, ws_url, ids, args.tasks, args.rate)
            ok &= len(deliveries) == args.tasks
            if deliveries:
                latencies = [latency for _, latency in deliveries]
                p50, p99 = (_percentile(latencies, p) * 1000 for p in (50, 99))
                print(
                    f"  delivery to a random drone: {len(latencies)}/{args.tasks} tasks"
                    f" at {args.rate:g}/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms"
                )
                stalls = _stalls(deliveries, started)
                print(f"  slower than {SLOW_S * 1000:g} ms, by send time: {stalls}")
        closed = sum(await fleet.ask_all(("close",)))
        print(f"  closed {closed}: RSS {_rss_mib(target):.1f} MiB")
        for generation in range(1, args.cycles + 1):
            print(f"generation {generation}: {args.drones} new drone ids")
            ok &= bool(await _connect_generation(fleet, tag, generation, args.drones))
            plateaus.append(_rss_mib(target))
            await fleet.ask_all(("close",))
            print(f"  plateau RSS {plateaus[-1]:.1f} MiB; all closed: {_rss_mib(target):.1f} MiB")
        growth = (plateaus[-1] - plateaus[0]) / plateaus[0] * 100
        print(
            f"summary: {per_socket_kb:.1f} kB per idle socket; plateau"
            f" {' → '.join(f'{p:.0f}' for p in plateaus)} MiB ({growth:+.1f}%);"
            f" after all closed {_rss_mib(target):.1f} MiB (before any: {base:.1f} MiB)"
        )
    finally:
        fleet.stop()
    return ok


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--url", help="an already running gateway (http://host:port) instead of starting one")
    add("--server-pid", type=int, action="append", default=[], help="with --url: its process")
    add("--broker-url", help="DRONEFLOW_BROKER_URL for the started server")
    add("--store-url", help="DRONEFLOW_STORE_URL for the started server")
    add("--drones", type=int, default=18_000, help="idle drone sockets (default 18000)")
    add("--processes", type=int, default=2, help="client processes (default 2)")
    add("--tasks", type=int, default=2000, help="tasks to random drones (default 2000)")
    add("--rate", type=float, default=200.0, help="tasks/s sent (default 200)")
    add("--cycles", type=int, default=3, help="connect/disconnect cycles of new ids (default 3)")
    add("--idle-s", type=float, default=15.0, help="server CPU read while idle (default 15; 0: no)")
    add("--compression", choices=("deflate", "none"), default="deflate")
    add("--startup-timeout-s", type=float, default=30)
    add("--keep-data", action="store_true", help="keep the started server's data and log")
    args = parser.parse_args(argv)
    if args.url and not args.server_pid:
        parser.error("--url needs --server-pid: memory is read from /proc/<pid>")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    hard = lift_open_file_limit()
    print(f"open-file hard limit {hard}: up to ~{hard - 100} drones per client process")
    with contextlib.ExitStack() as stack:
        if args.url:
            target = Target([args.url.rstrip("/")], args.server_pid)
        else:
            target = stack.enter_context(started_server(args))
        wait_healthy(target, args.startup_timeout_s)
        ok = run_loop(lambda: measure(args, target))
        ok &= stop_and_report(target)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
