"""CPU per task of MongoTaskStore, client and mongod, as the distributed services drive it;
optionally paired against another checkout of droneflow (A/B, alternating, one mongod).

Each task costs the writes of its round trip (create_task, mark_dispatched, claim,
save_result, mark_notified), with `--concurrency` tasks in flight at once, each of those calls
made concurrently as the services' consumers make them.

    python bench/mongo_micro.py [--tasks 3000] [--concurrency 100] [--rounds 3]
                                [--baseline DIR]   # DIR: e.g. a `git archive` of main

Needs a mongod binary (--mongod or DRONEFLOW_TEST_MONGOD); starts a one-node replica set.
"""

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from procfs import cpu_s  # noqa: E402


async def child(url: str, tasks: int, concurrency: int) -> dict[str, float]:
    from store_micro import drive, workload

    from shared.store.mongo import MongoTaskStore

    pairs = workload(tasks)
    async with MongoTaskStore(url) as store:
        cpu_before, started = time.process_time(), time.perf_counter()
        await drive(store, pairs, concurrency)
        elapsed = time.perf_counter() - started
        used = time.process_time() - cpu_before
    return {"elapsed_s": elapsed, "cpu_s": used}


def run_child(
    url: str, args: argparse.Namespace, pythonpath: str | None, mongod_pid: int
) -> dict[str, float]:
    env = dict(os.environ)
    paths = [p for p in (pythonpath, str(BENCH_DIR), env.get("PYTHONPATH")) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    argv = [sys.executable, str(Path(__file__)), "--child", url]
    argv += ["--tasks", str(args.tasks), "--concurrency", str(args.concurrency)]
    before = cpu_s(mongod_pid)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    figures["mongod_s"] = cpu_s(mongod_pid) - before
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--tasks", type=int, default=3000)
    add("--concurrency", type=int, default=100)
    add("--rounds", type=int, default=3)
    add("--baseline", help="another droneflow checkout to pair against (its root folder)")
    add("--mongo-options", default="", help="URL options for both builds, e.g. w=1")
    add("--mongod", default=os.environ.get("DRONEFLOW_TEST_MONGOD") or shutil.which("mongod"))
    add("--child", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(child(args.child, args.tasks, args.concurrency))))
        return 0
    if not args.mongod:
        raise SystemExit("needs --mongod or DRONEFLOW_TEST_MONGOD")
    sys.path.insert(0, str(BENCH_DIR.parent))
    from tests.mongod import mongod_server

    builds = {"this": None} if not args.baseline else {"baseline": args.baseline, "this": None}
    figures: dict[str, list[dict[str, float]]] = {name: [] for name in builds}
    with mongod_server(args.mongod) as server:
        assert server.process is not None
        for round_ in range(args.rounds):
            for name, path in builds.items():
                url = server.url.replace("/?", f"/micro{round_}{name}?")
                if args.mongo_options:
                    url += f"&{args.mongo_options}"
                run = run_child(url, args, path, server.process.pid)
                figures[name].append(run)
                print(
                    f"round {round_ + 1} {name}: {args.tasks / run['elapsed_s']:,.0f} tasks/s,"
                    f" client {1e6 * run['cpu_s'] / args.tasks:,.0f} µs/task,"
                    f" mongod {1e6 * run['mongod_s'] / args.tasks:,.0f} µs/task",
                    flush=True,
                )
    for name, runs in figures.items():
        rate = statistics.median(args.tasks / r["elapsed_s"] for r in runs)
        client_us = statistics.median(1e6 * r["cpu_s"] / args.tasks for r in runs)
        mongod_us = statistics.median(1e6 * r["mongod_s"] / args.tasks for r in runs)
        print(
            f"median {name}: {rate:,.0f} tasks/s, client {client_us:,.0f} µs/task,"
            f" mongod {mongod_us:,.0f} µs/task ({args.concurrency} tasks in flight)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
