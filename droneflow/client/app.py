"""AppClient: submit tasks and follow them over one multiplexed application WebSocket.

Submissions travel as `processing_task` frames with a `request_id` and an idempotency key, so
one interrupted by a reconnect is sent again without creating a second task. After every
reconnect the client reads the listing endpoint for the tasks it follows, from shortly
before its previous connection began: whatever happened while it was away reaches the
handles, and the handles drop what they already had.
"""

import asyncio
import logging
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote

import orjson
from pydantic import JsonValue

from droneflow.client.errors import (
    ERR_FRAME_TOO_LARGE,
    ClientError,
    FrameTooLarge,
    RequestFailed,
    TaskRejected,
)
from droneflow.client.handles import (
    TaskHandle,
    Tracker,
    update_of_frame,
    update_of_result,
    update_of_snapshot,
)
from droneflow.client.link import Backoff, Frame, Link, endpoints
from droneflow.client.rest import RestClient
from shared.clock import format_timestamp, parse_timestamp
from shared.lifecycle import TERMINAL_STATUSES
from shared.models import DEFAULT_PRIORITY
from shared.protocol import (
    CLOSE_MESSAGE_TOO_BIG,
    ERR_UNAVAILABLE,
    ERROR,
    PROCESSING_RESULT_RECEIVED,
    PROCESSING_TASK,
    TASK_CREATED,
    TASK_STATUS_UPDATE,
    TaskRequest,
)

log = logging.getLogger("droneflow.client")

CLOCK_SKEW_MARGIN: Final = timedelta(seconds=30)
"""Catch-up reads from this long before the dropped connection began: the timestamps it
compares were written by other processes, perhaps on other hosts."""
PAGE_SIZE: Final = 1000
UNAVAILABLE_RETRY_S: Final = 0.5


@dataclass
class PendingRequest:
    encoded: bytes
    future: asyncio.Future[str]
    sent_generation: int | None = None
    first_generation: int = 0


class AppClient:
    """An application's connection to droneflow; use it as an async context manager."""

    def __init__(
        self, url: str, app_id: str, token: str | None = None, *, backoff: Backoff | None = None
    ) -> None:
        http_url, ws_url = endpoints(url)
        self.app_id = app_id
        self.rest = RestClient(http_url, token)
        self._link = Link(
            f"{ws_url}/ws/application/{quote(app_id, safe='')}",
            token,
            self._on_frame,
            self._on_connect,
            backoff,
            self._on_close,
        )
        self._tracker = Tracker()
        self._requests: dict[str, PendingRequest] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._catch_up: asyncio.Task[None] | None = None
        self._catch_up_since: str | None = None
        self._connected_at: str | None = None
        self._refused_frame_bytes: int | None = None
        """The smallest frame a gateway closed the socket over (1009) without naming its limit."""
        self._largest_answered_bytes = 0

    async def __aenter__(self) -> Self:
        self._runner = asyncio.create_task(self._link.run())
        self._runner.add_done_callback(self._link_ended)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._link.close()
        tasks = [t for t in (self._runner, self._catch_up, *self._background) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._fail_everything(ClientError("the client is closed"))

    @property
    def connected(self) -> bool:
        return self._link.connected.is_set()

    async def wait_connected(self, *, wait_s: float = 30) -> None:
        """Until the socket is up: TimeoutError after `wait_s`, ConnectionRefused if the server
        refused this client for good. Updates of the app's tasks reach it from then on."""
        async with asyncio.timeout(wait_s):
            await self._link.wait_connected()

    # --- submitting and following ---------------------------------------------------------

    async def submit(
        self,
        drone_id: str,
        task_type: str,
        input_data: dict[str, JsonValue],
        priority: int = DEFAULT_PRIORITY,
        *,
        timeout_s: float | None = None,
        ttl_s: float | None = None,
        max_attempts: int | None = None,
        idempotency_key: str | None = None,
        wait_s: float = 30,
    ) -> TaskHandle:
        """Submit a task and return its handle once the server stored it. Waits up to `wait_s`
        for a connection and the answer (TimeoutError). Raises ValueError (pydantic's
        ValidationError) for a task the server would refuse, TaskRejected for a refusal
        (`frame_too_large` for a task over the gateway's frame limit)."""
        request = TaskRequest(
            drone_id=drone_id,
            task_type=task_type,
            input_data=input_data,
            priority=priority,
            timeout_s=timeout_s,
            ttl_s=ttl_s,
            max_attempts=max_attempts,
            # Makes sending it again after a reconnect safe: the server answers the same id.
            idempotency_key=idempotency_key or f"sdk-{uuid.uuid4().hex}",
        )
        request_id = uuid.uuid4().hex
        pending = PendingRequest(
            encoded=orjson.dumps(
                {
                    "type": PROCESSING_TASK,
                    "request_id": request_id,
                    "data": request.model_dump(exclude_none=True),
                }
            ),
            future=asyncio.get_running_loop().create_future(),
            first_generation=self._link.generation,
        )
        self._requests[request_id] = pending
        try:
            async with asyncio.timeout(wait_s):
                await self._send_request(pending)
                task_id = await pending.future
        finally:
            self._requests.pop(request_id, None)
        handle = self._tracker.add(TaskHandle(task_id, self.cancel))
        if self._link.generation > max(pending.first_generation, 1):
            # It crossed a reconnect (a first connection is none), and the catch-up did not
            # know its task id yet.
            self._spawn(self._refresh(handle))
        return handle

    async def watch(self, task_id: str, *, wait_s: float = 30) -> TaskHandle:
        """A handle on a task submitted earlier (by any client of this application)."""
        handle = self._tracker.add(TaskHandle(task_id, self.cancel))
        await self._refresh(handle, wait_s)
        return handle

    async def cancel(self, task_id: str, *, wait_s: float = 30) -> bool:
        """True if this cancelled the task, False if it had already finished."""
        try:
            await self.rest.post(f"/api/processing-tasks/{quote(task_id)}/cancel", timeout_s=wait_s)
        except RequestFailed as exc:
            if exc.status == 409:
                return False
            raise
        return True

    # --- REST lookups, as the API returns them ----------------------------------------------

    async def get_task(self, task_id: str, *, wait_s: float = 30) -> dict[str, Any]:
        task: dict[str, Any] = await self.rest.get(
            f"/api/processing-tasks/{quote(task_id)}", timeout_s=wait_s
        )
        return task

    async def get_result(self, task_id: str, *, wait_s: float = 30) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self.rest.get(
                f"/api/processing-results/{quote(task_id)}", timeout_s=wait_s
            )
        except RequestFailed as exc:
            if exc.status == 404:
                return None
            raise
        return result

    async def list_tasks(
        self,
        *,
        status: str | None = None,
        updated_since: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        wait_s: float = 30,
    ) -> dict[str, Any]:
        """One page: `tasks`, `count` and `next_cursor` (None on the last page)."""
        params = {
            "app_id": self.app_id,
            "status": status,
            "updated_since": updated_since,
            "limit": limit,
            "cursor": cursor,
        }
        page: dict[str, Any] = await self.rest.get(
            "/api/processing-tasks", params, timeout_s=wait_s
        )
        return page

    # --- the socket ---------------------------------------------------------------------------

    async def _send_request(self, pending: PendingRequest) -> None:
        await self._link.wait_connected()
        if pending.sent_generation != self._link.generation:
            # If it drops meanwhile, the next connection's _on_connect sends it again.
            await self._send_on_this_connection(pending)

    async def _send_on_this_connection(self, pending: PendingRequest) -> None:
        """Send, or fail the request at once if it is too large for the gateway: sending it
        would get the socket closed (1009), and again after every reconnect."""
        pending.sent_generation = self._link.generation
        size, refused = len(pending.encoded), self._refused_frame_bytes
        try:
            if refused is not None and size >= refused:
                raise FrameTooLarge(size, refused - 1)
            await self._link.send(pending.encoded)
        except FrameTooLarge as exc:
            if not pending.future.done():
                pending.future.set_exception(TaskRejected(ERR_FRAME_TOO_LARGE, str(exc)))

    async def _on_connect(self, welcome: Frame) -> None:
        if self._link.generation > 1 and self._catch_up_since is None:
            self._catch_up_since = self._connected_at
        self._connected_at = welcome.get("timestamp")
        for pending in list(self._requests.values()):
            if pending.sent_generation != self._link.generation and not pending.future.done():
                await self._send_on_this_connection(pending)
        if self._catch_up_since is not None:
            if self._catch_up is not None:
                self._catch_up.cancel()
            self._catch_up = asyncio.create_task(self._run_catch_up())

    async def _on_frame(self, frame: Frame) -> None:
        kind = frame.get("type")
        if kind in (TASK_STATUS_UPDATE, PROCESSING_RESULT_RECEIVED):
            update = update_of_frame(frame)
            if update is not None:
                self._tracker.deliver(update)
            elif isinstance(task_id := frame.get("task_id"), str):
                # A `completed` status without its result: read the result.
                self._spawn(self._fetch_result(task_id))
            return
        pending = self._requests.get(str(frame.get("request_id")))
        if pending is None or pending.future.done():
            if kind == ERROR:
                log.warning("%s: the server answered %s", self.app_id, frame)
            return
        self._largest_answered_bytes = max(self._largest_answered_bytes, len(pending.encoded))
        if kind == TASK_CREATED:
            pending.future.set_result(frame["task_id"])
        elif kind == ERROR and frame.get("code") == ERR_UNAVAILABLE:
            self._spawn(self._resend_later(pending, UNAVAILABLE_RETRY_S))
        elif kind == ERROR:
            retry_after = frame.get("retry_after")
            pending.future.set_exception(
                TaskRejected(
                    str(frame.get("code")),
                    str(frame.get("message")),
                    float(retry_after) if isinstance(retry_after, int | float) else None,
                )
            )

    def _on_close(self, close_code: int | None) -> None:
        if close_code != CLOSE_MESSAGE_TOO_BIG:
            return
        # The gateway named no limit, or a proxy before it keeps a smaller one. A frame this
        # connection carried and nobody answered was too large, so the largest of them was; one
        # no larger than a frame answered before cannot have been.
        unanswered = [
            pending
            for pending in self._requests.values()
            if pending.sent_generation == self._link.generation and not pending.future.done()
        ]
        if not unanswered:
            return
        culprit = max(unanswered, key=lambda pending: len(pending.encoded))
        size = len(culprit.encoded)
        if size <= self._largest_answered_bytes:
            return
        self._refused_frame_bytes = min(size, self._refused_frame_bytes or size)
        culprit.future.set_exception(
            TaskRejected(
                ERR_FRAME_TOO_LARGE,
                f"the gateway closed the connection over a frame of {size} bytes (1009)",
            )
        )

    async def _resend_later(self, pending: PendingRequest, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        pending.sent_generation = None
        await self._send_request(pending)

    # --- catching up ------------------------------------------------------------------------

    async def _run_catch_up(self) -> None:
        backoff = Backoff()
        while True:
            since = self._catch_up_since
            try:
                await self._catch_up_from(since)
            except (ClientError, OSError, TimeoutError) as exc:
                log.info("%s: catching up failed (%s), retrying", self.app_id, exc)
                await asyncio.sleep(backoff.next_delay_s())
                continue
            self._catch_up_since = None
            return

    async def _catch_up_from(self, since: str | None) -> None:
        watched = self._tracker.unfinished()
        if not watched:
            return
        floor = None
        if since is not None:
            floor = format_timestamp(parse_timestamp(since) - CLOCK_SKEW_MARGIN)
        cursor: str | None = None
        while True:
            page = await self.list_tasks(updated_since=floor, limit=PAGE_SIZE, cursor=cursor)
            for task in page["tasks"]:
                handle = watched.get(task["task_id"])
                if handle is not None:
                    await self._apply_snapshot(handle, task)
            cursor = page.get("next_cursor")
            if cursor is None:
                return

    async def _refresh(self, handle: TaskHandle, wait_s: float = 30) -> None:
        await self._apply_snapshot(handle, await self.get_task(handle.task_id, wait_s=wait_s))

    async def _apply_snapshot(self, handle: TaskHandle, task: dict[str, Any]) -> None:
        """Bring a handle to the state a stored task shows, as one update if it changed."""
        status = task["status"]
        if status == "completed":
            await self._fetch_result(handle.task_id)
            return
        if status not in TERMINAL_STATUSES and (
            status == (handle.status or "pending")
            or handle.predates_last_update(task.get("updated_at"))
        ):
            return
        self._tracker.deliver(update_of_snapshot(task), snapshot=True)

    async def _fetch_result(self, task_id: str) -> None:
        result = await self.get_result(task_id)
        if result is not None:
            self._tracker.deliver(update_of_result(result))

    # --- bookkeeping ----------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._logging_failure(work))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _logging_failure(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except (ClientError, OSError, TimeoutError) as exc:
            # Only reads that the next catch-up repeats, or a resend the caller's wait covers.
            log.warning("%s: %s", self.app_id, exc)

    def _link_ended(self, runner: asyncio.Task[None]) -> None:
        if not runner.cancelled() and (exc := runner.exception()) is not None:
            log.error("%s: %s", self.app_id, exc)
            self._fail_everything(exc)

    def _fail_everything(self, exc: BaseException) -> None:
        for pending in self._requests.values():
            if not pending.future.done():
                pending.future.set_exception(exc)
        self._tracker.close(str(exc))
