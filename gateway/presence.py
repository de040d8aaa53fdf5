"""Who is connected to this gateway, announced in the store so that every gateway can list
the whole fleet (`GET /api/drones`, the dashboard).

On a heartbeat, and at once when a socket opens or closes, the board renews this gateway's
announcement and writes only the entries that changed since its last write: with 18,000 idle
drones, re-writing them all every heartbeat held SQLite's one writer for 150-360 ms and
deliveries waited behind it. The announcement lives for PRESENCE_TTL_FACTOR heartbeats: the
entries of a gateway that died drop out of every listing by themselves, and one missed write
(a store blip) loses nothing."""

import asyncio
import contextlib
import itertools
import logging
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from gateway.connections import DroneSession, Registry
from shared.clock import format_timestamp, now_iso
from shared.errors import TRANSIENT_ERRORS
from shared.protocol import ApplicationInfo, DroneInfo
from shared.settings import Settings
from shared.store import Presence, TaskStore

log = logging.getLogger(__name__)

PRESENCE_TTL_FACTOR: Final = 3
NOT_WRITTEN: Final = -1
SCAN_SLICE: Final = 1000
"""Tickets compared between two yields to the loop: a scan of 18,000 in one go held deliveries
for tens of ms on a busy box (py-spy, bench/connections.py)."""


def epoch_iso(seconds: float) -> str:
    """A time.time() value as now_iso() would have written it then."""
    return format_timestamp(datetime.fromtimestamp(seconds, UTC))


def gateway_name(settings: Settings) -> str:
    return settings.gateway_name or f"{socket.gethostname()}:{settings.port}"


@dataclass(eq=False, slots=True)
class DroneTicket:
    """One drone connection as the board knows it; the socket's loop stamps `last_seen`. The
    board notes what it last sent of it (`written_*`): an unchanged ticket is not sent again.
    It keeps a serial number rather than its session id, a string longer than it is used:
    bench/connections.py counts memory per idle socket. `last_seen` is time.time(), stamped
    on every frame the drone sends, and only made a timestamp when written (a few µs a frame
    went to formatting ones never read)."""

    session: DroneSession
    serial: int
    connected_at: str = field(default_factory=now_iso)
    last_seen: float = field(default_factory=time.time)
    written_last_seen: float = -1.0
    written_held: int = NOT_WRITTEN


class PresenceBoard:
    def __init__(self, settings: Settings, registry: Registry, store: TaskStore) -> None:
        self.gateway = gateway_name(settings)
        self.interval_s = settings.presence_interval_s
        self.ttl_s = self.interval_s * PRESENCE_TTL_FACTOR
        self._registry = registry
        self._store = store
        self._drones: set[DroneTicket] = set()
        self._gone: list[str] = []
        """Sent entries of drones that left since the last write."""
        self._app_since: dict[str, str] = {}
        self._apps_written: set[str] = set()
        self._renewed_at: float | None = None
        """time.monotonic() when the last successful write began; None: write all next."""
        self._changed = asyncio.Event()
        self._serial = itertools.count(1)

    def drone_joined(self, session: DroneSession) -> DroneTicket:
        ticket = DroneTicket(session, next(self._serial))
        self._drones.add(ticket)
        self._changed.set()
        return ticket

    def drone_left(self, ticket: DroneTicket) -> None:
        self._drones.discard(ticket)
        if ticket.written_held != NOT_WRITTEN:
            self._gone.append(self.session_id(ticket))
        self._changed.set()

    def session_id(self, ticket: DroneTicket) -> str:
        return f"{self.gateway}/{ticket.session.drone_id}/{ticket.serial}"

    def apps_changed(self) -> None:
        self._changed.set()

    async def _drone_entries(self, everyone: bool) -> list[Presence]:
        """The entries to send, each noted as sent: a write that fails is followed by one of
        every entry (`everyone`), which also forgets every entry it does not name."""
        entries: list[Presence] = []
        for n, t in enumerate(list(self._drones), 1):
            if n % SCAN_SLICE == 0:
                await asyncio.sleep(0)
            if t not in self._drones:
                continue  # left while the scan yielded: drone_left saw whether it was sent
            held = len(t.session.held)
            if everyone or held != t.written_held or t.last_seen != t.written_last_seen:
                t.written_held, t.written_last_seen = held, t.last_seen
                entries.append(
                    Presence(
                        self.session_id(t),
                        "drone",
                        t.session.drone_id,
                        self.gateway,
                        t.connected_at,
                        epoch_iso(t.last_seen),
                        capacity=t.session.capacity,
                        held=held,
                    )
                )
        return entries

    def _app_entries(self, everyone: bool) -> tuple[list[Presence], list[str]]:
        """The entries of applications that connected (all, with `everyone`), and the session
        ids of those that left. An application's entry does not change while it stays."""
        now = now_iso()
        self._app_since = {a: self._app_since.get(a, now) for a in self._registry.apps}
        session_ids = {f"{self.gateway}/app/{app_id}": app_id for app_id in self._app_since}
        entries = [
            Presence(session_id, "application", app_id, self.gateway, since, since)
            for session_id, app_id in session_ids.items()
            if everyone or session_id not in self._apps_written
            for since in (self._app_since[app_id],)
        ]
        left = sorted(self._apps_written - session_ids.keys())
        self._apps_written = set(session_ids)
        return entries, left

    async def sync(self) -> None:
        started = time.monotonic()
        # Write everything when the last announcement may have expired (or none succeeded
        # yet): the store may have deleted the entries of an expired gateway.
        everyone = (
            self._renewed_at is None or started - self._renewed_at >= self.ttl_s - self.interval_s
        )
        # Before the scan: a drone that leaves during it is forgotten by the next write, after
        # this one may have written it.
        gone, self._gone = self._gone, []
        drones = await self._drone_entries(everyone)
        apps, apps_left = self._app_entries(everyone)
        try:
            await self._store.put_presence(
                self.gateway,
                drones + apps,
                self.ttl_s,
                gone=[] if everyone else gone + apps_left,
                complete=everyone,
            )
        except BaseException:
            self._renewed_at = None  # what was noted as sent may not be stored
            raise
        self._renewed_at = started

    async def run(self) -> None:
        """Until cancelled: one write per heartbeat, or sooner after a change; changes that
        arrive during a write share the next one."""
        while True:
            self._changed.clear()
            try:
                await self.sync()
            except TRANSIENT_ERRORS as exc:
                log.warning("could not announce this gateway's connections: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self.interval_s)

    async def withdraw(self) -> None:
        """At shutdown: drop this gateway's entries now rather than when they expire."""
        with contextlib.suppress(*TRANSIENT_ERRORS):
            await self._store.put_presence(self.gateway, [], 0.0, complete=True)
        self._renewed_at = None


async def fleet_drones(store: TaskStore) -> list[DroneInfo]:
    """Every drone connected to any gateway, with what waits for it. A drone listed twice (it
    reconnected before its old socket was noticed closed) is shown by its newest connection."""
    newest: dict[str, Presence] = {}
    for entry in await store.live_presence("drone"):
        newest[entry.client_id] = entry  # listed oldest connection first
    queued = await store.count_queued(list(newest))
    return [
        DroneInfo(
            drone_id=e.client_id,
            capacity=e.capacity,
            tasks_held=e.held,
            tasks_queued=queued.get(e.client_id, 0),
            connected_since=e.connected_at,
            last_seen=e.last_seen,
            gateway=e.gateway,
        )
        for e in newest.values()
    ]


async def fleet_applications(store: TaskStore) -> list[ApplicationInfo]:
    apps: dict[str, ApplicationInfo] = {}
    for entry in await store.live_presence("application"):
        known = apps.get(entry.client_id)
        if known is None:
            apps[entry.client_id] = ApplicationInfo(
                app_id=entry.client_id, connected_since=entry.connected_at, gateways=[]
            )
            known = apps[entry.client_id]
        known.gateways.append(entry.gateway)
    return list(apps.values())
