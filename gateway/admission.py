"""Whether an app may submit one more task: its rate (a token bucket per app id, per gateway
process) and its backlog (tasks in status `pending`, over all gateways, read from the store).

The identity is the app id the task is submitted for (the REST body's app_id, the application
socket's path id): with tokens on, authorization has already made that the token's subject."""

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Final

from gateway.rates import KeyedBuckets
from shared.protocol import ERR_RATE_LIMITED, ERR_TOO_MANY_PENDING
from shared.settings import Settings
from shared.store import TaskStore

APPS_KEPT: Final = 10_000


class LimitExceeded(Exception):
    """A submission refused by a limit: REST answers 429, the socket an `error` frame with
    `code`. Nothing was stored."""

    def __init__(self, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s

    @property
    def retry_after_header(self) -> str | None:
        """Retry-After takes whole seconds; rounding up never invites a retry too early."""
        if self.retry_after_s is None:
            return None
        return str(max(1, math.ceil(self.retry_after_s)))


@dataclass
class _Backlog:
    stored: int = 0
    read_at: float = -math.inf
    created_since: int = 0
    """Tasks this gateway created since `stored` was read: the cache never lags behind them."""
    reserved: int = 0
    """Submissions admitted and not yet stored or refused by the store."""
    reading: asyncio.Future[None] | None = field(default=None, repr=False)

    @property
    def count(self) -> int:
        return self.stored + self.created_since + self.reserved


class PendingGauge:
    """An app's pending tasks, read from the store at most once per `cache_s` per app, plus what
    this gateway admitted since. Other gateways' submissions show at the next read, so the
    app's backlog may exceed the limit by what they admit within `cache_s`; tasks that started
    meanwhile are still counted until then, which only errs towards refusing."""

    def __init__(self, store: TaskStore, limit: int, cache_s: float) -> None:
        self.store = store
        self.limit = limit
        self.cache_s = cache_s
        self._apps: dict[str, _Backlog] = {}

    async def reserve(self, app_id: str) -> _Backlog:
        """Take one of the app's pending slots for a task about to be stored (give it back with
        `backlog.reserved -= 1`); raises LimitExceeded when none is free."""
        backlog = await self._current(app_id)
        if backlog.count >= self.limit:
            raise LimitExceeded(
                ERR_TOO_MANY_PENDING,
                f"application {app_id!r} has {self.limit} or more tasks pending; "
                "submit more once some have started",
            )
        backlog.reserved += 1
        return backlog

    async def _current(self, app_id: str) -> _Backlog:
        backlog = self._apps.get(app_id)
        if backlog is None:
            if len(self._apps) >= APPS_KEPT:
                self._forget_idle()
            backlog = self._apps[app_id] = _Backlog()
        if time.monotonic() - backlog.read_at < self.cache_s:
            return backlog  # the hot path: no await
        if backlog.reading is None:
            backlog.reading = asyncio.ensure_future(self._read(app_id, backlog))
        # Concurrent submissions share one read; shield it from a submitter that goes away.
        await asyncio.shield(backlog.reading)
        return backlog

    async def _read(self, app_id: str, backlog: _Backlog) -> None:
        try:
            started = time.monotonic()
            created_before = backlog.created_since
            stored = await self.store.count_pending(app_id, self.limit)
            backlog.stored = stored
            backlog.created_since -= created_before
            backlog.read_at = started
        finally:
            backlog.reading = None

    def _forget_idle(self) -> None:
        """Drop apps with nothing pending: their next submission reads the store afresh."""
        for app_id, backlog in list(self._apps.items()):
            if backlog.count == 0 and backlog.reading is None:
                del self._apps[app_id]


class TaskAdmission:
    def __init__(self, settings: Settings, store: TaskStore) -> None:
        self.rates = KeyedBuckets(settings.task_rate_per_s, settings.task_burst)
        self.backlog = PendingGauge(
            store, settings.max_pending_per_app, settings.pending_count_cache_s
        )

    def admit(self, app_id: str) -> "Admission":
        """`async with admission.admit(app_id) as admitted:` raises LimitExceeded, or holds a
        pending slot while the task is stored; set `admitted.created` to what the store says
        (an idempotent replay creates nothing)."""
        return Admission(self, app_id)


class Admission:
    """A class rather than an asynccontextmanager: it runs once per submission, and a
    generator-based one costs several times as much."""

    __slots__ = ("_backlog", "admission", "app_id", "created")

    def __init__(self, admission: TaskAdmission, app_id: str) -> None:
        self.admission = admission
        self.app_id = app_id
        self.created = False
        self._backlog: _Backlog | None = None

    async def __aenter__(self) -> "Admission":
        wait_s = self.admission.rates.take(self.app_id)
        if wait_s:
            raise LimitExceeded(
                ERR_RATE_LIMITED,
                f"application {self.app_id!r} submits tasks faster than its limit; retry later",
                retry_after_s=max(0.001, round(wait_s, 3)),
            )
        self._backlog = await self.admission.backlog.reserve(self.app_id)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        backlog = self._backlog
        assert backlog is not None
        backlog.reserved -= 1
        if self.created:
            backlog.created_since += 1
