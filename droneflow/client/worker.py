"""DroneWorker: run async handlers for the tasks the server sends a drone.

The server re-sends the tasks a drone holds whenever it reconnects (`resumed: true`, same
attempt). A task still running here is therefore not started again, and a task that finished
here while its result may not have arrived is answered with the same result again.
"""

import asyncio
import contextlib
import logging
import signal
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

import orjson
from pydantic import JsonValue, ValidationError

from droneflow.client.link import Backoff, Frame, Link, endpoints
from shared.protocol import (
    ERR_UNAVAILABLE,
    ERROR,
    PROCESSING_RESULT,
    PROCESSING_TASK,
    TASK_CANCELLED,
    TASK_STATUS_UPDATE,
    DroneResult,
)

log = logging.getLogger("droneflow.client")

RESULTS_KEPT: Final = 1000
"""Results remembered for sending again; the server re-sends a task only while it holds it."""
MAX_ERROR_MESSAGE: Final = 4096
UNAVAILABLE_RETRY_S: Final = 0.5


@dataclass
class Task:
    """One delivery of a task to this drone."""

    task_id: str
    task_type: str
    input_data: dict[str, Any]
    priority: int
    attempt: int
    app_id: str
    report: Callable[[Frame], Awaitable[bool]] = field(repr=False)

    async def progress(self, percent: float | None = None, **extra: JsonValue) -> None:
        """A `processing` status update carrying {"progress": percent, **extra}. Best effort:
        while the drone is disconnected it is dropped, since a later one supersedes it. Raises
        FrameTooLarge for an update over the gateway's frame limit."""
        data: dict[str, JsonValue] = dict(extra)
        if percent is not None:
            data["progress"] = percent
        await self.report(
            {
                "type": TASK_STATUS_UPDATE,
                "data": {"task_id": self.task_id, "status": "processing", "additional_data": data},
            }
        )


Handler = Callable[[Task], Awaitable[dict[str, Any] | None]]


class DroneWorker:
    """A drone: `@worker.handler(task_type)` registers handlers, `await worker.run()` serves
    until stop(), SIGINT or SIGTERM, then finishes the tasks it holds (up to drain_timeout_s)."""

    def __init__(
        self,
        url: str,
        drone_id: str,
        token: str | None = None,
        capacity: int = 4,
        *,
        drain_timeout_s: float = 30,
        backoff: Backoff | None = None,
    ) -> None:
        _, ws_url = endpoints(url)
        self.drone_id = drone_id
        self.capacity = capacity
        self.drain_timeout_s = drain_timeout_s
        self.handlers: dict[str, Handler] = {}
        self.default_handler: Handler | None = None
        """Serves the task types without a handler of their own (a simulator serves them all)."""
        self.link = Link(
            f"{ws_url}/ws/drone/{quote(drone_id, safe='')}?capacity={capacity}",
            token,
            self._on_frame,
            backoff=backoff,
        )
        self.running: dict[str, asyncio.Task[None]] = {}
        self.draining = asyncio.Event()
        """Set once a stop was asked and run() is finishing the tasks it holds."""
        self._results: OrderedDict[str, bytes] = OrderedDict()
        """Encoded `processing_result` frames by task id."""
        self._cancelled: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._stop: asyncio.Event | None = None
        self._stop_requested = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def handler(self, task_type: str) -> Callable[[Handler], Handler]:
        def register(function: Handler) -> Handler:
            self.handlers[task_type] = function
            return function

        return register

    def stop(self) -> None:
        """Ask run() to finish; safe from any thread and before run() started."""
        self._stop_requested = True
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    def run_sync(self) -> None:
        """run() in a fresh event loop, for scripts."""
        asyncio.run(self.run())

    async def run(self, *, handle_signals: bool = True) -> None:
        """Serve until stopped. Raises Superseded or ConnectionRefused if the server will not
        have this drone (another connection took its id, a bad token). A program running
        several workers passes handle_signals=False and calls stop() itself."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        installed = self._install_signal_handlers() if handle_signals else []
        link = asyncio.create_task(self.link.run())
        stopping = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({link, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if link.done():
                await self._cancel_handlers()
                link.result()  # raises what ended it
                return
            await self._drain()
        finally:
            for sig in installed:
                self._loop.remove_signal_handler(sig)
            await self.link.close()
            for task in (link, stopping, *self._background):
                task.cancel()
            await asyncio.gather(link, stopping, *self._background, return_exceptions=True)

    def _install_signal_handlers(self) -> list[signal.Signals]:
        assert self._loop is not None
        assert self._stop is not None
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._loop.add_signal_handler(sig, self._stop.set)
            except (RuntimeError, NotImplementedError, ValueError):
                continue  # not the main thread, or a loop without signal support
            installed.append(sig)
        return installed

    async def _drain(self) -> None:
        """Finish what runs, including tasks that arrive meanwhile: a task left unfinished stays
        held by this drone id until it reconnects or the task times out."""
        self.draining.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.drain_timeout_s):
                while self.running:
                    await asyncio.wait(list(self.running.values()))
        await self._cancel_handlers()

    async def _cancel_handlers(self) -> None:
        tasks = list(self.running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- frames -------------------------------------------------------------------------------

    async def _on_frame(self, frame: Frame) -> None:
        kind = frame.get("type")
        task_id = frame.get("task_id")
        if not isinstance(task_id, str):
            return
        if kind == PROCESSING_TASK:
            await self._on_task(task_id, frame)
        elif kind == TASK_CANCELLED:
            if (running := self.running.get(task_id)) is not None:
                self._cancelled.add(task_id)
                running.cancel()
        elif kind == ERROR:
            self._on_error(task_id, frame)

    async def _on_task(self, task_id: str, frame: Frame) -> None:
        if task_id in self.running:
            return  # re-sent after a reconnect, and still running here
        if (result := self._results.get(task_id)) is not None:
            await self.link.send(result)  # the earlier answer may not have arrived
            return
        data = frame.get("task_data") or {}
        task = Task(
            task_id=task_id,
            task_type=str(data.get("task_type")),
            input_data=data.get("input_data") or {},
            priority=int(data.get("priority") or 0),
            attempt=int(frame.get("attempt") or 1),
            app_id=str(data.get("app_id")),
            report=self.link.send,
        )
        execution = asyncio.create_task(self._execute(task))
        self.running[task_id] = execution
        execution.add_done_callback(lambda _: self.running.pop(task_id, None))

    def _on_error(self, task_id: str, frame: Frame) -> None:
        log.warning("%s: the server answered %s", self.drone_id, frame)
        result = self._results.get(task_id)
        unavailable = frame.get("code") == ERR_UNAVAILABLE
        if unavailable and frame.get("message_type") == PROCESSING_RESULT and result is not None:
            background = asyncio.create_task(self._send_later(result))
            self._background.add(background)
            background.add_done_callback(self._background.discard)

    async def _send_later(self, result: bytes) -> None:
        await asyncio.sleep(UNAVAILABLE_RETRY_S)
        await self.link.send(result)

    # --- running handlers ---------------------------------------------------------------------

    async def _execute(self, task: Task) -> None:
        handler = self.handlers.get(task.task_type, self.default_handler)
        started = time.monotonic()
        try:
            if handler is None:
                raise LookupError(f"drone {self.drone_id} has no handler for {task.task_type!r}")
            output = await handler(task)
            report = self._report(task, started, success=True, result_data=output or {})
        except asyncio.CancelledError:
            if task.task_id in self._cancelled:
                self._cancelled.discard(task.task_id)
                return  # the server ended the task: there is nobody to answer
            raise
        except Exception as exc:
            log.exception("%s: task %s failed", self.drone_id, task.task_id)
            report = self._report(task, started, success=False, error_message=_message_of(exc))
        self._results[task.task_id] = report
        while len(self._results) > RESULTS_KEPT:
            self._results.popitem(last=False)
        # Sent now if connected; otherwise the server re-sends the task when the drone is
        # back, and _on_task answers it from _results.
        await self.link.send(report)

    def _report(self, task: Task, started: float, **fields: Any) -> bytes:
        """The result frame, encoded; a failure instead if the gateway would refuse it."""
        encoded = self._encoded_report(task, started, **fields)
        limit = self.link.max_frame_bytes
        if limit is not None and len(encoded) > limit:
            message = (
                f"the handler's result is {len(encoded)} bytes as a frame, over the gateway's"
                f" limit of {limit} bytes"
            )
            encoded = self._encoded_report(task, started, success=False, error_message=message)
        return encoded

    def _encoded_report(self, task: Task, started: float, **fields: Any) -> bytes:
        values = {"task_id": task.task_id, "drone_id": self.drone_id, **fields}
        values["processing_time"] = round(time.monotonic() - started, 6)
        try:
            result = DroneResult.model_validate(values)
        except ValidationError as exc:
            values.update(
                success=False,
                result_data={},
                error_message=_message_of(ValueError(f"the handler's result is unusable: {exc}")),
            )
            result = DroneResult.model_validate(values)
        return orjson.dumps(
            {"type": PROCESSING_RESULT, "data": result.model_dump(exclude_none=True)}
        )


def _message_of(exc: BaseException) -> str:
    message = str(exc) or type(exc).__name__
    return message[:MAX_ERROR_MESSAGE]
