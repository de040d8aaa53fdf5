"""Load generator: applications and simulated drones drive droneflow over its public WebSocket
protocol, closed loop; prints tasks/s, round-trip latency percentiles, server CPU and peak RSS.

    python bench/loadgen.py [--apps 4] [--drones 16] [--capacity 4] [--tasks 20000]
                            [--inflight 200] [--repeat 3] [--url http://host:port ...] [--auth]

Without --url it starts `droneflow serve` on a free port with a fresh data directory and stops
it with SIGTERM at the end. With several --url (gateways of one deployment), application i and
drone i connect to url i mod n. The exit status is 1 when a task was lost or the server misbehaved.
With --auth every client connects with a token (the started server runs with tokens on and a
signing key loadgen made; with --url, the DRONEFLOW_AUTH_* settings name the signing key).
See bench/README.md for how to read the figures.
"""

import argparse
import contextlib
import secrets
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fleet import PRIORITIES, FleetSpec
from generators import ChildProcessGenerator, InProcessGenerator, run_loop
from procfs import CpuSample, cpu_s, memory_mib, now
from report import Run, report_server, summarize, write_json
from server_process import Target, started_server, stop_and_report, wait_healthy

# bench/distributed.py imports these from here.
__all__ = ["cpu_s", "main", "memory_mib"]


def split(total: int, ids: list[str]) -> dict[str, int]:
    share, extra = divmod(total, len(ids))
    return {app_id: share + (i < extra) for i, app_id in enumerate(ids)}


def fleet_specs(args: argparse.Namespace, target: Target) -> list[FleetSpec]:
    tag = secrets.token_hex(3)  # fresh ids: nothing a previous run left queued reaches us
    app_ids = [f"bench{tag}app{i}" for i in range(args.apps)]
    drone_ids = [f"bench{tag}drone{i}" for i in range(args.drones)]
    ws_urls = ["ws" + url.removeprefix("http") for url in target.urls]
    tokens = mint_tokens(args, app_ids, drone_ids) if args.auth else {}
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
            tokens=tokens,
        )
        for k in range(args.processes)
    ]


def mint_tokens(
    args: argparse.Namespace, app_ids: list[str], drone_ids: list[str]
) -> dict[str, str]:
    from shared.keys import load_keys
    from shared.settings import Settings

    keys = args.token_keys or load_keys(Settings())
    if keys is None or keys.signing_key is None:
        raise SystemExit("--auth with --url needs DRONEFLOW_AUTH_PRIVATE_KEY_FILE or _SECRET_FILE")
    day_s = 86400.0
    tokens = {app_id: keys.issue("app", app_id, day_s) for app_id in app_ids}
    tokens.update({drone_id: keys.issue("drone", drone_id, day_s) for drone_id in drone_ids})
    return tokens


@contextlib.contextmanager
def signing_key(args: argparse.Namespace) -> Iterator[None]:
    """--auth on a started server: a fresh Ed25519 key it verifies with and loadgen signs with."""
    args.token_keys, args.server_env = None, {}
    if not args.auth or args.url:
        yield
        return
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from shared.tokens import TokenKeys

    key = Ed25519PrivateKey.generate()
    directory = Path(tempfile.mkdtemp(prefix="droneflow-bench-key-"))
    try:
        path = directory / "signing.pem"
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
        args.token_keys = TokenKeys.ed25519(None, key)
        args.server_env = {"DRONEFLOW_AUTH": "token", "DRONEFLOW_AUTH_PRIVATE_KEY_FILE": str(path)}
        yield
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def measure(args: argparse.Namespace, target: Target) -> tuple[list[Run], list[Run]]:
    """The closed-loop runs, then (--half-peak) as many runs paced at half their median
    tasks/s: the latency of a server that is busy but keeps up."""
    specs = fleet_specs(args, target)
    all_apps = [a for spec in specs for a in spec.app_ids]
    generator: InProcessGenerator | ChildProcessGenerator = (
        InProcessGenerator(specs[0]) if args.processes == 1 else ChildProcessGenerator(specs)
    )
    await generator.open()
    runs: list[Run] = []
    paced: list[Run] = []
    try:
        if args.warmup:
            started = now()
            warm = await generator.run_phase("w", split(args.warmup, all_apps), args.stall_s)
            print(
                f"warm-up: {warm.received}/{args.warmup} tasks in {now() - started:.2f} s"
                + (f", lost {warm.lost}" if warm.lost else "")
            )
        for k in range(0 if args.paced_at else args.repeat):
            before = CpuSample.take(target.pids, generator.pids)
            result = await generator.run_phase(f"r{k}.", split(args.tasks, all_apps), args.stall_s)
            runs.append(Run.of(result, before, CpuSample.take(target.pids, generator.pids)))
            print(f"run {k + 1}/{args.repeat}: {runs[-1].line()}")
            for error in result.errors[:5]:
                print(f"  {error}")
            if result.connections_lost:
                print(f"aborted: {result.connections_lost} connections lost")
                break
        if args.paced_at:
            rate_per_s = args.paced_at
            print(f"paced at {rate_per_s:,.0f} tasks/s offered")
        elif args.half_peak and runs and not runs[-1].result.connections_lost:
            rate_per_s = statistics.median(r.tasks_per_s for r in runs) / 2
            print(f"paced at half the peak: {rate_per_s:,.0f} tasks/s offered")
        else:
            rate_per_s = 0
        if rate_per_s:
            for k in range(args.repeat):
                before = CpuSample.take(target.pids, generator.pids)
                result = await generator.run_phase(
                    f"h{k}.", split(args.tasks, all_apps), args.stall_s, rate_per_s / len(all_apps)
                )
                paced.append(Run.of(result, before, CpuSample.take(target.pids, generator.pids)))
                print(f"half-peak run {k + 1}/{args.repeat}: {paced[-1].line()}")
    finally:
        await generator.close()
    return runs, paced


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
    add("--auth", action="store_true", help="tokens on: every app and drone connects with one")
    add(
        "--half-peak",
        action="store_true",
        help="after the closed-loop runs, --repeat runs paced at half their median tasks/s",
    )
    add(
        "--paced-at",
        type=float,
        metavar="TASKS_PER_S",
        help="only --repeat runs paced at this offered rate, no closed-loop runs: the same"
        " load for every build of an A/B comparison (half-peak paces at a rate each build"
        " measures for itself)",
    )
    add(
        "--vs-celery",
        action="store_true",
        help="then the Celery peer on RabbitMQ at the same in-flight count (apps x inflight),"
        " without and with publisher confirms; prints the ratios (needs the bench extra)",
    )
    add(
        "--legs",
        action="store_true",
        help="split each round trip at the times the started server stamped in its SQLite"
        " store (created, delivered, finished): where the latency goes (bench/legs.py)",
    )
    add("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/", help="for --vs-celery")
    args = parser.parse_args(argv)
    if args.processes > min(args.apps, args.drones):
        parser.error("--processes may not exceed --apps or --drones")
    if args.paced_at is not None and args.paced_at <= 0:
        parser.error("--paced-at must be positive")
    if args.paced_at and args.vs_celery:
        parser.error("--vs-celery needs the closed-loop runs; not with --paced-at")
    if args.legs and (args.url or args.store_url):
        parser.error("--legs reads the started server's SQLite store; not with --url/--store-url")
    if args.url and (args.broker_url or args.store_url):
        parser.error("--broker-url/--store-url configure the started server; not with --url")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.ExitStack() as stack:
        stack.enter_context(signing_key(args))
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
            f" | {args.processes} generator process(es) | tokens {'on' if args.auth else 'off'}"
        )
        runs, paced = run_loop(lambda: measure(args, target))
        complete = summarize(runs) if runs else True
        if paced:
            print("half-peak runs:")
            complete = summarize(paced) and complete
        server = report_server(target)
        healthy = stop_and_report(target)
        if args.legs and target.log_path is not None:
            from legs import print_legs, server_stamps

            stamps = server_stamps(target.log_path.parent / "droneflow.db")
            for title, measured in (("closed-loop runs", runs), ("paced runs", paced)):
                if measured:
                    print_legs(title, measured, stamps)
    peers = vs_celery(args, runs) if args.vs_celery and runs else []
    if args.json:
        write_json(args, runs, server, paced=paced, celery=peers)
    return 0 if complete and healthy else 1


def vs_celery(args: argparse.Namespace, runs: list[Run]) -> list[dict[str, Any]]:
    """The Celery peer (bench/celery_peer.py) at droneflow's in-flight count, on a fresh vhost
    of the local RabbitMQ, confirms off (the issue's table) then on, after droneflow's runs."""
    from celery_peer import line, run_celery_peer
    from rabbitmq_vhost import fresh_vhost, rabbitmq_pid

    inflight = args.apps * args.inflight
    ours = statistics.median(r.tasks_per_s for r in runs)
    peers = []
    for confirms in (False, True):
        with fresh_vhost(args.amqp_url) as url:
            rabbit = rabbitmq_pid()
            peer = run_celery_peer(
                url,
                inflight,
                args.tasks,
                confirms,
                repeat=args.repeat,
                warmup=args.warmup,
                measure_pids={"rabbitmq": rabbit} if rabbit else None,
            )
        print(line(peer))
        print(
            f"droneflow / celery (confirms {'on' if confirms else 'off'}, {inflight} in flight):"
            f" {ours:,.0f} / {peer['tasks_per_s']:,.0f} tasks/s = {ours / peer['tasks_per_s']:.2f}x"
        )
        peers.append(peer)
    return peers


if __name__ == "__main__":
    sys.exit(main())
