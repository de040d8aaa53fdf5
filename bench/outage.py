"""Issue 11's table: how clients fare while one dependency is away for a while.

One gateway, one dispatcher and one result writer (processes) on a private RabbitMQ node and a
throwaway mongod; 5 simulated drones; an app POSTing --rate tasks/s for --duration s. After
--before s one dependency is taken away for --outage s. One run per fault:

    python bench/outage.py [--rate 100] [--duration 20] [--outage 6] [--mongod PATH]

Prints one Markdown row per fault: offered, accepted, refused (503/429), client timeouts,
slowest POST, first success after the dependency's return, and lost (accepted, not terminal
60 s after the load, or stored twice). Needs the RabbitMQ server scripts (run as root) and a
mongod binary (--mongod or DRONEFLOW_TEST_MONGOD). Nothing it starts outlives it.
"""

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.mongod import MongodServer, mongod_server
from tests.processes import Cluster, ServiceProcess, cluster_env
from tests.rabbitmq_node import RabbitMQNode, private_rabbitmq
from tests.sim import SimDrone
from tests.steady_load import (
    SteadyLoad,
    duplicated_results,
    summary,
    wait_all_terminal,
)

Fault = tuple[str, Callable[[], None], Callable[[], None]]


def faults(node: RabbitMQNode, mongod: MongodServer) -> list[Fault]:
    return [
        ("mongod killed -9, then restarted", mongod.kill9, mongod.start),
        ("RabbitMQ memory alarm", node.raise_memory_alarm, node.clear_memory_alarm),
        ("`rabbitmqctl stop_app`, then `start_app`", node.stop_app, node.start_app),
    ]


async def one_run(
    args: argparse.Namespace, node: RabbitMQNode, mongod: MongodServer, fault: Fault
) -> dict[str, object]:
    name, go_away, come_back = fault
    folder = Path(tempfile.mkdtemp(prefix="droneflow-outage-"))
    store_url = (
        f"mongodb://127.0.0.1:{mongod.port}/outage_{uuid.uuid4().hex[:8]}?directConnection=true"
    )
    env = cluster_env(node.url, folder, DRONEFLOW_STORE_URL=store_url, DRONEFLOW_LOG_LEVEL="info")
    env.pop("DRONEFLOW_SWEEP_INTERVAL_S")  # the defaults, as an operator runs it
    env.pop("DRONEFLOW_DISPATCH_GRACE_S")
    cluster = Cluster(
        [ServiceProcess("gateway", env, folder)],
        [ServiceProcess("dispatcher", env, folder)],
        [ServiceProcess("result-writer", env, folder)],
    )
    await cluster.start()
    try:
        gateway = cluster.gateways[0]
        drone_ids = [f"BD{i}" for i in range(5)]
        # The drones get a process of their own: in the load's, they would slow its clock.
        drones_stop = multiprocessing.Event()
        drones = multiprocessing.Process(
            target=run_drones, args=(gateway.ws_url, drone_ids, drones_stop)
        )
        drones.start()
        load = SteadyLoad(
            gateway.base_url, gateway.ws_url, "BenchApp", drone_ids,
            rest_per_s=args.rate, ws_per_s=0, answer_timeout_s=args.client_timeout,
            max_connections=100,
        )  # fmt: skip
        load_stop = asyncio.Event()
        loading = asyncio.create_task(load.run(load_stop))
        started = time.monotonic()
        await asyncio.sleep(args.before)
        away_at = time.monotonic()
        await asyncio.to_thread(go_away)
        await asyncio.sleep(args.outage)
        await asyncio.to_thread(come_back)
        back_at = time.monotonic()
        # At least --after s of load once the dependency is back, to see service resume.
        end = max(started + args.duration, back_at + args.after)
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        load_stop.set()
        await loading
        accepted = load.accepted_ids()
        missing = await wait_all_terminal(gateway.base_url, accepted, timeout_s=60)
        duplicated = await duplicated_results(gateway.base_url, load.drone_ids)
        drones_stop.set()
        await asyncio.to_thread(drones.join, 30)
        if missing:
            print(f"  not terminal: {await states(gateway.base_url, missing)}", file=sys.stderr)
        before = sorted(a.latency_s for a in load.sent_between(started, away_at))
        if before:
            print(
                f"  before the fault: {len(before)} requests,"
                f" median {before[len(before) // 2]:.3f} s,"
                f" p99 {before[int(len(before) * 0.99)]:.3f} s",
                file=sys.stderr,
            )
        slowest = sorted(load.answers, key=lambda a: -a.latency_s)[:3]
        print(
            f"  {name}: away at +{away_at - started:.1f} s, back at +{back_at - started:.1f} s;"
            " slowest sent at "
            + ", ".join(f"+{a.sent_at - started:.1f} s ({a.outcome})" for a in slowest),
            file=sys.stderr,
        )
        return {"fault": name, **summary(load, back_at), "lost": len(missing) + duplicated}
    finally:
        cluster.stop()


def run_drones(ws_url: str, drone_ids: list[str], stop: Any) -> None:
    async def main() -> None:
        stopping = asyncio.Event()
        drones = [SimDrone([ws_url], drone_id, capacity=8, work_s=0.02) for drone_id in drone_ids]
        runners = [asyncio.create_task(d.run(stopping)) for d in drones]
        await asyncio.to_thread(stop.wait)
        stopping.set()
        await asyncio.gather(*runners, return_exceptions=True)

    asyncio.run(main())


async def states(base_url: str, task_ids: list[str]) -> list[tuple[str, str, int]]:
    async with httpx.AsyncClient(base_url=base_url) as http:
        tasks = [(await http.get(f"/api/processing-tasks/{t}")).json() for t in task_ids]
    return [(t["task_id"], t["status"], t["attempts"]) for t in tasks]


def row(figures: dict[str, object]) -> str:
    first = figures["first_success_after_return_s"]
    cells = [
        figures["fault"],
        figures["offered"],
        figures["accepted"],
        figures["refused"],
        figures["timeouts"],
        f"{figures['slowest_s']} s",
        "none" if first is None else f"{first} s",
        figures["lost"],
    ]
    return "| " + " | ".join(str(c) for c in cells) + " |"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100.0, help="POSTs per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    parser.add_argument("--before", type=float, default=5.0, help="seconds before the fault")
    parser.add_argument("--outage", type=float, default=6.0, help="seconds the dependency is away")
    parser.add_argument("--after", type=float, default=4.0, help="least load after the return")
    parser.add_argument("--client-timeout", type=float, default=30.0)
    parser.add_argument("--only", help="run only the faults whose name contains this")
    parser.add_argument("--mongod", default=os.environ.get("DRONEFLOW_TEST_MONGOD"))
    args = parser.parse_args()
    if not args.mongod:
        parser.error("needs a mongod binary: --mongod PATH or DRONEFLOW_TEST_MONGOD")
    print("| fault | offered | accepted | refused (503) | client timeouts | slowest POST "
          "| first success after return | lost |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    with private_rabbitmq() as node, mongod_server(args.mongod) as mongod:
        for fault in faults(node, mongod):
            if args.only and args.only not in fault[0]:
                continue
            print(row(await one_run(args, node, mongod, fault)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
