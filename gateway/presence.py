"""Who is connected to this gateway, announced in the store so that every gateway can list
the whole fleet (`GET /api/drones`, the dashboard).

The board re-writes this gateway's entries on a heartbeat, and at once when a socket opens or
closes. Entries live for PRESENCE_TTL_FACTOR heartbeats: those of a gateway that died drop out
of every listing by themselves, and one missed write (a store blip) loses nothing."""

import asyncio
import contextlib
import itertools
import logging
import socket
from dataclasses import dataclass, field
from typing import Final

from gateway.connections import DroneSession, Registry
from shared.clock import now_iso
from shared.errors import TRANSIENT_ERRORS
from shared.protocol import ApplicationInfo, DroneInfo
from shared.settings import Settings
from shared.store import Presence, TaskStore

log = logging.getLogger(__name__)

PRESENCE_TTL_FACTOR: Final = 3


def gateway_name(settings: Settings) -> str:
    return settings.gateway_name or f"{socket.gethostname()}:{settings.port}"


@dataclass(eq=False, slots=True)
class DroneTicket:
    """One drone connection as the board knows it; the socket's loop stamps `last_seen`."""

    session: DroneSession
    session_id: str
    connected_at: str = field(default_factory=now_iso)
    last_seen: str = field(default_factory=now_iso)


class PresenceBoard:
    def __init__(self, settings: Settings, registry: Registry, store: TaskStore) -> None:
        self.gateway = gateway_name(settings)
        self.interval_s = settings.presence_interval_s
        self._registry = registry
        self._store = store
        self._drones: set[DroneTicket] = set()
        self._app_since: dict[str, str] = {}
        self._published: set[str] = set()
        self._changed = asyncio.Event()
        self._serial = itertools.count(1)

    def drone_joined(self, session: DroneSession) -> DroneTicket:
        ticket = DroneTicket(session, f"{self.gateway}/{session.drone_id}/{next(self._serial)}")
        self._drones.add(ticket)
        self._changed.set()
        return ticket

    def drone_left(self, ticket: DroneTicket) -> None:
        self._drones.discard(ticket)
        self._changed.set()

    def apps_changed(self) -> None:
        self._changed.set()

    def entries(self) -> list[Presence]:
        now = now_iso()
        drones = [
            Presence(
                t.session_id,
                "drone",
                t.session.drone_id,
                self.gateway,
                t.connected_at,
                t.last_seen,
                capacity=t.session.capacity,
                held=len(t.session.held),
            )
            for t in self._drones
        ]
        self._app_since = {a: self._app_since.get(a, now) for a in self._registry.apps}
        apps = [
            Presence(f"{self.gateway}/app/{app_id}", "application", app_id, self.gateway, at, now)
            for app_id, at in self._app_since.items()
        ]
        return drones + apps

    async def sync(self) -> None:
        entries = self.entries()
        current = {entry.session_id for entry in entries}
        await self._store.remove_presence(sorted(self._published - current))
        await self._store.put_presence(entries, self.interval_s * PRESENCE_TTL_FACTOR)
        self._published = current

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
            await self._store.remove_presence(sorted(self._published))
        self._published = set()


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
