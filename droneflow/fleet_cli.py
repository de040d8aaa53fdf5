"""`droneflow drones` (the connected fleet) and `droneflow simulate` (a fleet of DroneWorkers
that serve every task type, for demos and load)."""

import asyncio
import logging
import random
import re
import signal
import sys
from dataclasses import dataclass
from typing import Annotated, Any, Final

import typer

from droneflow import output
from droneflow.client import DroneWorker, Task
from droneflow.remote import (
    DEFAULT_URL,
    EXIT_USAGE,
    JsonOption,
    Remote,
    TokenOption,
    UrlOption,
    fail,
    reported,
    run,
)
from shared.ids import ID_PATTERN

DRONE_COLUMNS: Final = (
    "DRONE",
    "CAPACITY",
    "HELD",
    "QUEUED",
    "CONNECTED SINCE",
    "LAST SEEN",
    "GATEWAY",
)
DRONE_FIELDS: Final = (
    "drone_id",
    "capacity",
    "tasks_held",
    "tasks_queued",
    "connected_since",
    "last_seen",
    "gateway",
)
PROGRESS_STEPS: Final = 4


def register(app: typer.Typer) -> None:
    app.command()(drones)
    app.command(help=SIMULATE_HELP)(simulate)


def drones(
    json_: JsonOption = False, url: UrlOption = DEFAULT_URL, token: TokenOption = None
) -> None:
    """The drones connected to any gateway (admin-only when tokens are on).

    With --json it prints the document of GET /api/drones."""
    remote = Remote(url, token)
    fleet = run(remote, remote.get("/api/drones"))
    if json_:
        output.print_json(fleet)
        return
    rows = [[drone.get(field) for field in DRONE_FIELDS] for drone in fleet["drones"]]
    output.print_table(DRONE_COLUMNS, rows)


SIMULATE_HELP: Final = """Run simulated drones until Ctrl-C or SIGTERM, then print how many
tasks they served.

`droneflow simulate --drones 3 --capacity 4 --work-ms 500 --fail-rate 0.1`

The drones are PREFIX1 … PREFIXN. Each serves every task type: it reports progress, works
--work-ms, then fails a --fail-rate fraction of its tasks and completes the rest with a result
that echoes the input. It says `ready` on stderr once every drone is connected.

With tokens on, a drone token serves only the drone it names: `droneflow simulate --id Drone001
--token $DRONE_TOKEN`.

Exit codes: 0 stopped by a signal, 2 usage error, 3 the server is unreachable, 4 the token is
missing or refused."""


class SimulatedFailure(Exception):
    """What a handler raises for the --fail-rate share of tasks."""


@dataclass
class Tally:
    completed: int = 0
    failed: int = 0


def simulate(
    drone_count: Annotated[int, typer.Option("--drones", min=1, help="how many drones")] = 1,
    capacity: Annotated[int, typer.Option(min=1, help="tasks each drone runs at once")] = 4,
    work_ms: Annotated[int, typer.Option(min=0, help="how long each task takes")] = 1000,
    fail_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="the fraction of tasks that fail")
    ] = 0.0,
    prefix: Annotated[str, typer.Option(help="drone ids are PREFIX1, PREFIX2, …")] = "sim-",
    named: Annotated[
        list[str] | None,
        typer.Option(
            "--id",
            help="a drone id, instead of --drones and --prefix (repeatable)",
            show_default=False,
        ),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    remote = Remote(url, token)
    drone_ids = named or [f"{prefix}{n}" for n in range(1, drone_count + 1)]
    with reported(remote):
        for drone_id in drone_ids:
            if re.match(ID_PATTERN, drone_id) is None:
                fail(f"{drone_id!r} is not a drone id: letters, digits, - and _", EXIT_USAGE)
    # A drone's handler failing on purpose is the point, not news: no traceback for it.
    logging.getLogger("droneflow.client").addFilter(_hide_simulated_failures)
    tally = run(remote, _simulate(remote, drone_ids, capacity, work_ms / 1000, fail_rate))
    served = tally.completed + tally.failed
    typer.echo(
        f"{_count(len(drone_ids), 'simulated drone')} served {_count(served, 'task')}: "
        f"{tally.completed} completed, {tally.failed} failed on purpose"
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


async def _simulate(
    remote: Remote, drone_ids: list[str], capacity: int, work_s: float, fail_rate: float
) -> Tally:
    await remote.get("/healthz")  # an unreachable server is an error now, not endless retries
    tally = Tally()

    async def serve(task: Task) -> dict[str, Any]:
        for step in range(1, PROGRESS_STEPS + 1):
            await asyncio.sleep(work_s / PROGRESS_STEPS)
            if step < PROGRESS_STEPS:
                await task.progress(100 * step / PROGRESS_STEPS)
        if random.random() < fail_rate:
            tally.failed += 1
            raise SimulatedFailure(f"simulated failure (--fail-rate {fail_rate:g})")
        tally.completed += 1
        return {"simulated": True, "work_ms": round(work_s * 1000), "echo": task.input_data}

    workers = [DroneWorker(remote.url, drone_id, remote.token, capacity) for drone_id in drone_ids]
    for worker in workers:
        worker.default_handler = serve
    await _run_until_signalled(workers, remote.url)
    return tally


async def _run_until_signalled(workers: list[DroneWorker], url: str) -> None:
    """Until SIGINT or SIGTERM; raises what ended a worker by itself (the server refused it: a
    token, an id another connection took)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runs = [asyncio.create_task(worker.run(handle_signals=False)) for worker in workers]
    announcing = asyncio.create_task(_announce_ready(workers, url))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([*runs, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for worker in workers:
            worker.stop()
        outcomes = await asyncio.gather(*runs, return_exceptions=True)
        for task in (announcing, stopping):
            task.cancel()
        await asyncio.gather(announcing, stopping, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


async def _announce_ready(workers: list[DroneWorker], url: str) -> None:
    await asyncio.gather(*(worker.link.connected.wait() for worker in workers))
    names = ", ".join(worker.drone_id for worker in workers)
    sys.stderr.write(f"ready: {len(workers)} drones connected to {url} ({names})\n")
    sys.stderr.flush()


def _hide_simulated_failures(record: logging.LogRecord) -> bool:
    return not (record.exc_info and isinstance(record.exc_info[1], SimulatedFailure))
