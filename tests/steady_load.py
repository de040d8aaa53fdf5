"""A steady stream of task submissions, over REST and over an application socket, that records
when each was sent and how it was answered: what outage tests and bench/outage.py measure."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from tests.e2e.clients import task_body

ACCEPTED = frozenset({"200", "task_created"})
REFUSED = frozenset({"503", "429", "unavailable"})
TERMINAL = frozenset({"completed", "failed", "cancelled"})


@dataclass
class Answer:
    channel: str
    sent_at: float
    answered_at: float
    outcome: str
    """An HTTP status, `task_created`, a WebSocket error code, `timeout` or `closed`."""
    task_id: str | None = None

    @property
    def latency_s(self) -> float:
        return self.answered_at - self.sent_at


@dataclass
class SteadyLoad:
    base_url: str
    ws_url: str
    app_id: str
    drone_ids: list[str]
    rest_per_s: float
    ws_per_s: float
    answer_timeout_s: float = 5.0
    max_connections: int = 1000
    answers: list[Answer] = field(default_factory=list)
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    def _body(self) -> dict[str, Any]:
        n = next(self._counter)
        return task_body(self.app_id, self.drone_ids[n % len(self.drone_ids)], priority=1 + n % 5)

    async def run(self, stop: asyncio.Event) -> None:
        limits = httpx.Limits(max_connections=self.max_connections, max_keepalive_connections=100)
        async with httpx.AsyncClient(base_url=self.base_url, limits=limits) as http:
            await asyncio.gather(self._rest(http, stop), self._ws(stop))

    async def _paced(self, per_s: float, stop: asyncio.Event, send: Any) -> None:
        """Sends at a fixed rate whatever the answers do: a slow answer must not slow the load."""
        running: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        for n in itertools.count():
            if stop.is_set():
                break
            running.add(task := asyncio.create_task(send()))
            task.add_done_callback(running.discard)
            delay = started + (n + 1) / per_s - time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(delay, 0))
        if running:
            await asyncio.wait(running)

    async def _rest(self, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        async def post() -> None:
            sent = time.monotonic()
            try:
                response = await http.post(
                    "/api/processing-tasks", json=self._body(), timeout=self.answer_timeout_s
                )
            except httpx.TimeoutException:
                self.answers.append(Answer("rest", sent, time.monotonic(), "timeout"))
                return
            except httpx.TransportError:
                self.answers.append(Answer("rest", sent, time.monotonic(), "closed"))
                return
            task_id = response.json().get("task_id") if response.status_code == 200 else None
            self.answers.append(
                Answer("rest", sent, time.monotonic(), str(response.status_code), task_id)
            )

        if self.rest_per_s > 0:
            await self._paced(self.rest_per_s, stop, post)

    async def _ws(self, stop: asyncio.Event) -> None:
        if self.ws_per_s <= 0:
            return
        url = f"{self.ws_url}/ws/application/{self.app_id}"
        async with websockets.connect(url, compression=None, max_size=None) as connection:
            pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
            reader = asyncio.create_task(self._read(connection, pending))

            async def submit() -> None:
                key = f"r{next(self._counter)}"
                future = pending[key] = asyncio.get_running_loop().create_future()
                sent = time.monotonic()
                frame = {"type": "processing_task", "request_id": key, "data": self._body()}
                try:
                    await connection.send(orjson.dumps(frame).decode())
                    reply = await asyncio.wait_for(future, self.answer_timeout_s)
                except TimeoutError:
                    self.answers.append(Answer("ws", sent, time.monotonic(), "timeout"))
                    return
                except websockets.ConnectionClosed:
                    self.answers.append(Answer("ws", sent, time.monotonic(), "closed"))
                    return
                finally:
                    pending.pop(key, None)
                outcome = reply["type"] if reply["type"] == "task_created" else reply["code"]
                self.answers.append(
                    Answer("ws", sent, time.monotonic(), outcome, reply.get("task_id"))
                )

            try:
                await self._paced(self.ws_per_s, stop, submit)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)

    @staticmethod
    async def _read(
        connection: ClientConnection, pending: dict[str, asyncio.Future[dict[str, Any]]]
    ) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in connection:
                frame = orjson.loads(raw)
                future = pending.get(frame.get("request_id", ""))
                if future is not None and not future.done():
                    future.set_result(frame)

    # --- figures --------------------------------------------------------------------------
    def accepted_ids(self) -> list[str]:
        return [a.task_id for a in self.answers if a.outcome in ACCEPTED and a.task_id]

    def sent_between(self, start: float, end: float) -> list[Answer]:
        return [a for a in self.answers if start <= a.sent_at < end]

    def first_success_after(self, moment: float) -> float | None:
        """Seconds from `moment` to the first answer accepting a task sent after it."""
        times = [
            a.answered_at for a in self.answers if a.sent_at >= moment and a.outcome in ACCEPTED
        ]
        return min(times) - moment if times else None


async def wait_all_terminal(base_url: str, task_ids: list[str], timeout_s: float) -> list[str]:
    """Polls the store through the gateway; returns the ids still not terminal at the end."""
    left = set(task_ids)
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while left:
                    for task_id in list(left):
                        response = await http.get(f"/api/processing-tasks/{task_id}")
                        if response.status_code == 200 and response.json()["status"] in TERMINAL:
                            left.discard(task_id)
                    if left:
                        await asyncio.sleep(0.5)
    return sorted(left)


async def duplicated_results(base_url: str, drone_ids: list[str]) -> int:
    """Results stored more than once for the same task, over every drone."""
    duplicated = 0
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        for drone_id in drone_ids:
            page = (await http.get(f"/api/processing-results/drone/{drone_id}?limit=1000")).json()
            ids = [r["task_id"] for r in page["results"]]
            duplicated += len(ids) - len(set(ids))
    return duplicated


def summary(load: SteadyLoad, back_at: float) -> dict[str, object]:
    """The figures of issue 11's table for one run."""
    answers = load.answers
    first = load.first_success_after(back_at)
    return {
        "offered": len(answers),
        "accepted": sum(a.outcome in ACCEPTED for a in answers),
        "refused": sum(a.outcome in REFUSED for a in answers),
        "timeouts": sum(a.outcome == "timeout" for a in answers),
        "other": sorted({a.outcome for a in answers} - ACCEPTED - REFUSED - {"timeout"}),
        "slowest_s": round(max((a.latency_s for a in answers), default=0.0), 2),
        "first_success_after_return_s": None if first is None else round(first, 2),
    }
