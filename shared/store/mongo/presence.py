"""Presence in MongoDB: collection `presence`, one document per connection, keyed by
session_id. Each gateway re-writes its own on a heartbeat; a dead gateway's entries outlive it
only until their expires_at. A mixin of MongoTaskStore, which sets the two collections."""

from collections.abc import Sequence
from datetime import timedelta
from typing import Final

from pymongo import ASCENDING, IndexModel, ReplaceOne
from pymongo.asynchronous.collection import AsyncCollection

from shared.clock import format_timestamp, now_iso, parse_timestamp
from shared.store import Presence, PresenceKind
from shared.store.mongo.documents import Document
from shared.store.mongo.errors import translated

PRESENCE: Final = "presence"
PRESENCE_INDEXES: Final = [
    IndexModel([("session_id", ASCENDING)], name="ux_session_id", unique=True),
    IndexModel(
        [("kind", ASCENDING), ("client_id", ASCENDING), ("connected_at", ASCENDING)],
        name="ix_kind_client",
    ),
    IndexModel([("expires_at", ASCENDING)], name="ix_expires_at"),
]
_FIELDS: Final = tuple(Presence.__dataclass_fields__)
_PROJECTION: Final = {"_id": False, "expires_at": False}


class MongoPresence:
    _tasks: AsyncCollection[Document]
    _presence: AsyncCollection[Document]

    @translated
    async def put_presence(self, entries: Sequence[Presence], ttl_s: float) -> None:
        now = now_iso()
        expires_at = format_timestamp(parse_timestamp(now) + timedelta(seconds=ttl_s))
        if entries:
            await self._presence.bulk_write(
                [
                    ReplaceOne(
                        {"session_id": e.session_id},
                        {**{f: getattr(e, f) for f in _FIELDS}, "expires_at": expires_at},
                        upsert=True,
                    )
                    for e in entries
                ],
                ordered=False,
            )
        await self._presence.delete_many({"expires_at": {"$lt": now}})

    @translated
    async def remove_presence(self, session_ids: Sequence[str]) -> None:
        if session_ids:
            await self._presence.delete_many({"session_id": {"$in": list(session_ids)}})

    @translated
    async def live_presence(self, kind: PresenceKind) -> list[Presence]:
        found = self._presence.find(
            {"kind": kind, "expires_at": {"$gte": now_iso()}}, _PROJECTION
        ).sort([("client_id", ASCENDING), ("connected_at", ASCENDING)])
        return [Presence(**document) async for document in found]

    @translated
    async def count_queued(self, drone_ids: Sequence[str]) -> dict[str, int]:
        counts = dict.fromkeys(drone_ids, 0)
        if not drone_ids:
            return counts
        grouped = await self._tasks.aggregate(
            [
                {
                    "$match": {
                        "drone_id": {"$in": list(drone_ids)},
                        "status": "pending",
                        "delivery": "queued",
                    }
                },
                {"$group": {"_id": "$drone_id", "n": {"$sum": 1}}},
            ]
        )
        async for row in grouped:
            counts[row["_id"]] = row["n"]
        return counts
