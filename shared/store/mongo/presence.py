"""Presence in MongoDB: collection `presence`, one document per connection keyed by
session_id, and `presence_gateways`, one per gateway keyed by its name, holding its expires_at.
Each gateway renews its own document on a heartbeat and writes an entry only when a connection
opens, closes or changes; a dead gateway's entries outlive it only until its expires_at. A mixin
of MongoTaskStore, which sets the two collections."""

from collections.abc import Sequence
from datetime import timedelta
from typing import Final

from pymongo import ASCENDING, DeleteMany, IndexModel, ReplaceOne
from pymongo.asynchronous.collection import AsyncCollection

from shared.clock import format_timestamp, now_iso, parse_timestamp
from shared.store import Presence, PresenceKind
from shared.store.mongo.documents import Document
from shared.store.mongo.errors import translated

PRESENCE: Final = "presence"
PRESENCE_GATEWAYS: Final = "presence_gateways"
PRESENCE_INDEXES: Final = [
    IndexModel([("session_id", ASCENDING)], name="ux_session_id", unique=True),
    IndexModel(
        [("kind", ASCENDING), ("client_id", ASCENDING), ("connected_at", ASCENDING)],
        name="ix_kind_client",
    ),
    # For the rare deletes by gateway: a complete write, and the purge of a dead gateway.
    IndexModel([("gateway", ASCENDING)], name="ix_gateway"),
]
# Entries carried their own expiry before presence_gateways held it: nothing reads it now.
RETIRED_PRESENCE_INDEXES: Final = ("ix_expires_at",)
_FIELDS: Final = tuple(Presence.__dataclass_fields__)
# Inclusive, so that a field this version does not know (an older one's expires_at) is not read.
_PROJECTION: Final = {"_id": False, **dict.fromkeys(_FIELDS, True)}


class MongoPresence:
    _tasks: AsyncCollection[Document]
    _presence: AsyncCollection[Document]

    @property
    def _gateways(self) -> AsyncCollection[Document]:
        return self._presence.database[PRESENCE_GATEWAYS]

    @translated
    async def put_presence(
        self,
        gateway: str,
        entries: Sequence[Presence],
        ttl_s: float,
        *,
        gone: Sequence[str] = (),
        complete: bool = False,
    ) -> None:
        now = now_iso()
        await self._purge_presence(now)
        writes: list[DeleteMany | ReplaceOne[Document]] = []
        if complete:
            named = [e.session_id for e in entries]
            writes.append(DeleteMany({"gateway": gateway, "session_id": {"$nin": named}}))
        if gone:
            writes.append(DeleteMany({"session_id": {"$in": list(gone)}}))
        writes += [
            ReplaceOne(
                {"session_id": e.session_id},
                {**{f: getattr(e, f) for f in _FIELDS}, "written_at": now},
                upsert=True,
            )
            for e in entries
        ]
        if writes:
            await self._presence.bulk_write(writes, ordered=False)
        expires_at = format_timestamp(parse_timestamp(now) + timedelta(seconds=ttl_s))
        await self._gateways.update_one(
            {"_id": gateway}, {"$set": {"expires_at": expires_at}}, upsert=True
        )

    async def _purge_presence(self, now: str) -> None:
        """Delete the entries of gateways whose time ran out. Without a transaction, a gateway
        may renew itself meanwhile: its entries written after its old expiry (a complete write
        starts anew) are kept, and so is its document, whose expires_at then differs."""
        async for expired in self._gateways.find({"expires_at": {"$lt": now}}):
            name, expires_at = expired["_id"], expired["expires_at"]
            await self._presence.delete_many({"gateway": name, "written_at": {"$lt": expires_at}})
            await self._gateways.delete_one({"_id": name, "expires_at": expires_at})

    @translated
    async def live_presence(self, kind: PresenceKind) -> list[Presence]:
        live = [
            document["_id"]
            async for document in self._gateways.find(
                {"expires_at": {"$gte": now_iso()}}, {"_id": True}
            )
        ]
        found = self._presence.find({"kind": kind, "gateway": {"$in": live}}, _PROJECTION).sort(
            [("client_id", ASCENDING), ("connected_at", ASCENDING)]
        )
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
