"""A workload of simulated apps and drones run while faults are injected, and the invariants
checked at the end. Each fault's figures are collected into a report printed by the test."""

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.e2e.clients import task_body
from tests.sim import SimApp, SimDrone

Fault = tuple[str, Callable[[], Awaitable[None]]]


@dataclass
class FaultFigure:
    fault: str
    recovery_s: float


@dataclass
class WorkloadReport:
    sent: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_error_code: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    results_duplicated: int = 0
    redeliveries: int = 0
    faults: list[FaultFigure] = field(default_factory=list)

    def lines(self) -> list[str]:
        lines = [
            f"sent={self.sent} completed={self.by_status['completed']} "
            f"failed={self.by_status['failed']} "
            f"cancelled={self.by_status['cancelled']} lost={self.lost} "
            f"results_duplicated={self.results_duplicated} redeliveries={self.redeliveries}",
            f"failed by error_code: {dict(self.by_error_code)}",
        ]
        lines += [f"fault {f.fault}: serving again after {f.recovery_s:.2f}s" for f in self.faults]
        return lines


@dataclass
class Workload:
    gateways: list[str]
    apps: list[SimApp]
    drones: list[SimDrone]
    tasks_per_app: int
    submit_pause_s: float = 0.01
    task_options: dict[str, Any] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    _runners: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._runners = [asyncio.create_task(x.run(self.stop)) for x in [*self.drones, *self.apps]]

    async def submit_all(self, options_for: Callable[[int], dict[str, Any]] | None = None) -> None:
        async def submit(app: SimApp) -> None:
            for n in range(self.tasks_per_app):
                drone = self.drones[(n + hash(app.app_id)) % len(self.drones)]
                extra = dict(options_for(n)) if options_for else {}
                cancel = extra.pop("cancel", False)
                body = task_body(
                    app.app_id, drone.drone_id, priority=1 + n % 5, **self.task_options, **extra
                )
                task_id = await app.submit(f"{app.app_id}-{n}", body)
                if cancel:
                    await app.cancel(task_id)
                await asyncio.sleep(self.submit_pause_s)

        await asyncio.gather(*(submit(app) for app in self.apps))

    def finals_seen(self) -> int:
        return sum(sum(app.final_count.values()) for app in self.apps)

    async def wait_progress(self, since: int, timeout_s: float = 90) -> None:
        async with asyncio.timeout(timeout_s):
            # Counts kept by many app tasks; a short poll is simpler than wiring an event.
            while self.finals_seen() <= since:  # noqa: ASYNC110
                await asyncio.sleep(0.05)

    async def inject(self, faults: Sequence[Fault], report: WorkloadReport) -> None:
        """Each fault in turn; the next only once tasks are completing again."""
        for name, fault in faults:
            before = self.finals_seen()
            started = time.monotonic()
            print(f"[{time.strftime('%X')}] {name} (finals so far: {before})", flush=True)
            await fault()
            await self.wait_progress(before)
            report.faults.append(FaultFigure(name, time.monotonic() - started))
            print(
                f"[{time.strftime('%X')}] serving again after {report.faults[-1].recovery_s:.2f}s",
                flush=True,
            )

    async def finish(self, timeout_s: float) -> dict[str, set[str]]:
        # One deadline for all: waited in turn, five stuck apps took 15 minutes to report.
        waits = await asyncio.gather(*(app.wait_all_final(timeout_s) for app in self.apps))
        missing = {app.app_id: wait for app, wait in zip(self.apps, waits, strict=True)}
        self.stop.set()
        await asyncio.gather(*self._runners, return_exceptions=True)
        return missing


async def check_invariants(
    workload: Workload, base_url: str, report: WorkloadReport, max_attempts: int = 3
) -> None:
    """Every task is terminal, stored results are unique, every app heard every final state,
    no delivery beyond max_attempts or capacity, no idempotency key made two tasks."""
    all_ids = [tid for app in workload.apps for tid in app.task_ids.values()]
    report.sent = len(all_ids)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        for app in workload.apps:
            listed: list[dict[str, Any]] = []
            cursor = None
            while True:
                params: dict[str, Any] = {"app_id": app.app_id, "limit": 1000}
                if cursor:
                    params["cursor"] = cursor
                page = (await http.get("/api/processing-tasks", params=params)).json()
                listed += page["tasks"]
                cursor = page["next_cursor"]
                if not cursor:
                    break
            assert len(listed) == len(app.task_ids), (
                f"{app.app_id}: idempotency keys made extra tasks"
            )
            assert len({t["idempotency_key"] for t in listed}) == len(listed)
            for task in listed:
                report.by_status[task["status"]] += 1
                if task["status"] == "failed":
                    report.by_error_code[task["error_code"]] += 1
                assert task["status"] in {"completed", "failed", "cancelled"}, task
                assert task["attempts"] <= max_attempts, task
        for drone in workload.drones:
            results = (
                await http.get(f"/api/processing-results/drone/{drone.drone_id}?limit=1000")
            ).json()
            ids = [r["task_id"] for r in results["results"]]
            report.results_duplicated += len(ids) - len(set(ids))
    report.lost = sum(
        1 for app in workload.apps for tid in app.task_ids.values() if tid not in app.finals
    )
    deliveries: Counter[str] = Counter()
    for drone in workload.drones:
        deliveries.update(drone.deliveries)
        assert drone.over_capacity == [], (
            f"{drone.drone_id} held more than {drone.capacity}: {drone.over_capacity}"
        )
    report.redeliveries = sum(n - 1 for n in deliveries.values())
    assert max(deliveries.values(), default=0) <= max_attempts
    assert all(app.foreign == [] for app in workload.apps), "an app saw another app's traffic"
    assert report.lost == 0
    assert report.results_duplicated == 0
