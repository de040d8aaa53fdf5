"""MongoTaskStore, the adapter: its lifecycle and every TaskStore method."""

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError
from pymongo.errors import ConfigurationError as MongoConfigurationError

from shared.clock import now_iso
from shared.errors import (
    ConfigurationError,
    StatusNotReportable,
    StoreError,
    TaskAlreadyFinished,
    TaskError,
    TaskNotFound,
    TaskNotYours,
)
from shared.lifecycle import DRONE_REPORTABLE, ErrorCode
from shared.models import NewTask, ResultRecord, TaskRecord
from shared.store import (
    CancelOutcome,
    CreateOutcome,
    ResultOutcome,
    StatusOutcome,
    TaskPage,
    TokenRecord,
)
from shared.store.cursor import decode_cursor, encode_cursor
from shared.store.mongo import tokens
from shared.store.mongo.batching import Batcher
from shared.store.mongo.documents import (
    DEFAULT_DATABASE,
    LIVE,
    MAY_CANCEL,
    MAY_START,
    RESULT_INDEXES,
    RESULTS,
    RETIRED_RESULT_INDEXES,
    RETIRED_TASK_INDEXES,
    ROUTED_INCARNATION,
    STATE,
    TASK_INDEXES,
    TASK_PROJECTION,
    TASKS,
    Document,
    result_record,
    task_document,
    task_record,
)
from shared.store.mongo.errors import translated
from shared.store.mongo.indexes import ensure_indexes
from shared.store.mongo.presence import (
    PRESENCE,
    PRESENCE_INDEXES,
    RETIRED_PRESENCE_INDEXES,
    MongoPresence,
)
from shared.store.mongo.results import (
    DUPLICATE_KEY,
    read_result,
    results_of_app,
    unnotified_with_results,
    write_result,
    write_results,
)
from shared.store.mongo.transitions import (
    cancelled_update,
    claim_many,
    claim_update,
    claimable,
    expired_update,
    mark_dispatched_many,
    processing_update,
    release_update,
    transition,
)
from shared.store.mongo.write_concern import REPAIRABLE, durable_write_concern


def default_options(url: str) -> dict[str, Any]:
    """Client options whose default here differs from PyMongo's, unless the URL sets them.

    retryWrites=false: every write of this store is safe to repeat or to lose the answer of
    (a transition's filter is its precondition, an insert's unique key refuses a second copy,
    and callers repair a write whose answer they did not get: deploy/OPERATIONS.md), so the
    session and transaction number mongod records for each retryable write buy nothing but one
    automatic retry after a dropped connection or a failover."""
    given = {name.lower() for name, _ in parse_qsl(urlsplit(url).query)}
    return {} if "retrywrites" in given else {"retryWrites": False}


class MongoTaskStore(MongoPresence):
    """The TaskStore port on MongoDB; `async with MongoTaskStore(url) as store`. The database is
    `database`, else the URL's default database, else "droneflow". Raises StoreUnavailable for
    network and server-selection failures, StoreError for other server errors, and the
    TaskError tree as the port says."""

    def __init__(self, url: str, database: str | None = None, *, timeout_s: float = 30.0) -> None:
        self.url = url
        self.database = database
        self.timeout_s = timeout_s
        self._client: AsyncMongoClient[Document] | None = None
        self._tasks: AsyncCollection[Document]
        # The same collections for the writes a sweep or a later step repairs (see
        # REPAIRABLE): acknowledged once applied, without waiting for the journal.
        self._tasks_repairable: AsyncCollection[Document]
        self._results: AsyncCollection[Document]
        self._results_repairable: AsyncCollection[Document]
        self._tokens: AsyncCollection[Document]
        self._presence: AsyncCollection[Document]
        self._state: AsyncCollection[Document]
        self._creations = Batcher(self._create_tasks)
        self._dispatches = Batcher(self._mark_dispatched)
        self._claims = Batcher(self._claim)
        self._results_batch = Batcher(self._save_results)

    @translated
    async def __aenter__(self) -> Self:
        try:
            # While the server is away an operation waits for it at most timeout_s (pymongo's
            # default is 30 s) and then raises ServerSelectionTimeoutError: callers answer 503.
            timeout_ms = max(1, int(self.timeout_s * 1000))
            client: AsyncMongoClient[Document] = AsyncMongoClient(
                self.url,
                serverSelectionTimeoutMS=timeout_ms,
                connectTimeoutMS=timeout_ms,
                **default_options(self.url),
            )
        except (MongoConfigurationError, ValueError) as exc:  # ValueError: a bad host or port
            raise ConfigurationError(f"DRONEFLOW_STORE_URL: {exc}") from None
        try:
            # Task creation, a result's ending of its task, cancel, release, expire and
            # mark_notified: the URL's write concern, or its equal that costs mongod less.
            durable = await durable_write_concern(client, self.url)
            db: AsyncDatabase[Document] = (
                client.get_database(self.database, write_concern=durable)
                if self.database
                else client.get_default_database(default=DEFAULT_DATABASE, write_concern=durable)
            )
            self._tasks = db[TASKS]
            self._results = db[RESULTS]
            self._tasks_repairable = self._tasks.with_options(write_concern=REPAIRABLE)
            self._results_repairable = self._results.with_options(write_concern=REPAIRABLE)
            self._presence = db[PRESENCE]
            self._state = db[STATE]
            await ensure_indexes(self._tasks, TASK_INDEXES, RETIRED_TASK_INDEXES)
            await ensure_indexes(self._results, RESULT_INDEXES, RETIRED_RESULT_INDEXES)
            self._tokens = db[tokens.TOKENS]
            await self._tokens.create_indexes(tokens.TOKEN_INDEXES)
            await ensure_indexes(self._presence, PRESENCE_INDEXES, RETIRED_PRESENCE_INDEXES)
        except BaseException:
            await client.close()
            raise
        self._client = client
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    @translated
    async def drop_database(self) -> None:
        """Delete this store's database and everything in it (tests, resets)."""
        await self._tasks.database.client.drop_database(self._tasks.database.name)

    # --- creating and reading -------------------------------------------------------------
    @translated
    async def create_task(self, new: NewTask) -> CreateOutcome:
        return await self._creations.submit(new)

    async def _create_tasks(self, batch: Sequence[NewTask]) -> list[CreateOutcome]:
        now = now_iso()
        tasks = [TaskRecord(**new.model_dump(), created_at=now, updated_at=now) for new in batch]
        documents = [task_document(task, new, now) for task, new in zip(tasks, batch, strict=True)]
        refused: set[int] = set()
        try:
            if len(documents) == 1:
                await self._tasks.insert_one(documents[0])
            else:
                # Unordered: a taken key refuses its own document, not those after it.
                await self._tasks.insert_many(documents, ordered=False)
        except DuplicateKeyError:
            refused = {0}
        except BulkWriteError as exc:
            if exc.details.get("writeConcernErrors") or any(
                error.get("code") != DUPLICATE_KEY for error in exc.details["writeErrors"]
            ):
                raise
            refused = {error["index"] for error in exc.details["writeErrors"]}
        return [
            await self._existing(new) if i in refused else CreateOutcome(task, created=True)
            for i, (task, new) in enumerate(zip(tasks, batch, strict=True))
        ]

    async def _existing(self, new: NewTask) -> CreateOutcome:
        """The idempotency key is taken, or the same task_id was retried."""
        existing = None
        if new.idempotency_key is not None:
            existing = await self._tasks.find_one(
                {"app_id": new.app_id, "idempotency_key": new.idempotency_key},
                TASK_PROJECTION,
            )
        if existing is None:
            existing = await self._tasks.find_one({"task_id": new.task_id}, TASK_PROJECTION)
        if existing is None:
            raise StoreError(f"task {new.task_id} was neither inserted nor found")
        return CreateOutcome(task_record(existing), created=False)

    @translated
    async def get_task(self, task_id: str) -> TaskRecord | None:
        document = await self._tasks.find_one({"task_id": task_id}, TASK_PROJECTION)
        return None if document is None else task_record(document)

    @translated
    async def pending_for_drone(
        self, drone_id: str, limit: int, *, app_id: str | None = None
    ) -> list[TaskRecord]:
        if limit < 1:  # limit(0) means "no limit" to MongoDB
            return []
        query: Document = {"drone_id": drone_id, "status": "pending"}
        if app_id is not None:
            query["app_id"] = app_id
        cursor = (
            self._tasks.find(query, TASK_PROJECTION)
            .sort([("priority", DESCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)])
            .limit(limit)
        )
        return [task_record(document) async for document in cursor]

    @translated
    async def list_tasks(
        self,
        *,
        app_id: str | None,
        status: str | None,
        updated_since: str | None,
        limit: int,
        cursor: str | None,
    ) -> TaskPage:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        query: Document = {}
        if app_id is not None:
            query["app_id"] = app_id
        if status is not None:
            query["status"] = status
        if updated_since is not None:
            query["updated_at"] = {"$gte": updated_since}
        if cursor is not None:
            updated_at, task_id = decode_cursor(cursor)
            query["$or"] = [
                {"updated_at": {"$gt": updated_at}},
                {"updated_at": updated_at, "task_id": {"$gt": task_id}},
            ]
        found = (
            self._tasks.find(query, TASK_PROJECTION)
            .sort([("updated_at", ASCENDING), ("task_id", ASCENDING)])
            .limit(limit + 1)
        )
        tasks = [task_record(document) async for document in found]
        if len(tasks) <= limit:
            return TaskPage(tasks, None)
        del tasks[limit:]
        return TaskPage(tasks, encode_cursor(tasks[-1].updated_at, tasks[-1].task_id))

    @translated
    async def count_pending(self, app_id: str, at_most: int) -> int:
        if at_most < 1:  # limit=0 means "no limit" to MongoDB
            return 0
        query = {"app_id": app_id, "status": "pending"}
        return await self._tasks.count_documents(query, limit=at_most, hint="ix_app_pending")

    @translated
    async def get_result(self, task_id: str) -> ResultRecord | None:
        return await read_result(self._tasks, self._results, task_id)

    @translated
    async def results_for_drone(
        self, drone_id: str, limit: int, *, app_id: str | None = None
    ) -> list[ResultRecord]:
        if limit < 1:
            return []
        if app_id is not None:
            return await results_of_app(self._results, drone_id, app_id, limit)
        cursor = (
            self._results.find({"drone_id": drone_id})
            .sort([("timestamp", DESCENDING), ("_id", DESCENDING)])
            .limit(limit)
        )
        return [result_record(document) async for document in cursor]

    # --- dispatch and delivery ------------------------------------------------------------
    @translated
    async def mark_dispatched(self, task_id: str) -> TaskRecord | None:
        return await self._dispatches.submit(task_id)

    async def _mark_dispatched(self, task_ids: Sequence[str]) -> list[TaskRecord | None]:
        """mark_dispatched of every id that arrived while the previous batch was written."""
        if len(task_ids) == 1:
            return [
                await transition(
                    self._tasks_repairable,
                    {"task_id": task_ids[0], "delivery": "queued", "status": LIVE},
                    {"$set": {"dispatched_at": now_iso()}},
                )
            ]
        return await mark_dispatched_many(self._tasks_repairable, task_ids)

    @translated
    async def stamp_dispatched(self, task_ids: Sequence[str]) -> None:
        if task_ids:
            await self._tasks_repairable.update_many(
                {"task_id": {"$in": list(task_ids)}, "delivery": "queued", "status": LIVE},
                {"$set": {"dispatched_at": now_iso()}},
            )

    @translated
    async def undispatched(self, older_than: str, limit: int) -> list[TaskRecord]:
        if limit < 1:
            return []
        cursor = (
            self._tasks.find(
                {
                    "dispatched_at": None,
                    "updated_at": {"$lt": older_than},
                    "delivery": "queued",
                    "status": LIVE,
                },
                TASK_PROJECTION,
            )
            .sort("updated_at", ASCENDING)
            .limit(limit)
            # ix_updated also serves this sort, and ties on a trial of an idle collection; it
            # would walk every task ever stored, the partial index only the undispatched.
            .hint("ix_undispatched_at")
        )
        return [task_record(document) async for document in cursor]

    @translated
    async def routed_before(self, routed_before: str, limit: int) -> list[TaskRecord]:
        if limit < 1:
            return []
        cursor = (
            self._tasks.find(
                {
                    "dispatched_at": {"$type": "string", "$lt": routed_before},
                    "delivery": "queued",
                    "status": LIVE,
                },
                TASK_PROJECTION,
            )
            .sort("dispatched_at", ASCENDING)
            .limit(limit)
        )
        return [task_record(document) async for document in cursor]

    @translated
    async def incarnation(self) -> str | None:
        # The primary's topologyVersion.processId (MongoDB 4.4+) is new with each start of a
        # mongod, and differs between members: a restart and a failover both change it.
        # Behind mongos it is the router's, which a shard's restart does not change.
        assert self._client is not None
        reply = await self._client.admin.command("hello")
        process_id = reply.get("topologyVersion", {}).get("processId")
        return None if process_id is None else str(process_id)

    @translated
    async def routed_incarnation(self) -> str | None:
        document = await self._state.find_one({"_id": ROUTED_INCARNATION})
        return None if document is None else str(document["incarnation"])

    @translated
    async def record_routed_incarnation(self, incarnation: str) -> None:
        # Journaled (the durable concern): lost, the next dispatcher to look routes again.
        await self._state.update_one(
            {"_id": ROUTED_INCARNATION},
            {"$set": {"incarnation": incarnation, "recorded_at": now_iso()}},
            upsert=True,
        )

    @translated
    async def reset_dispatch(self) -> int:
        outcome = await self._tasks.update_many(
            {"dispatched_at": {"$type": "string"}, "delivery": "queued", "status": LIVE},
            {"$set": {"dispatched_at": None}},
        )
        return outcome.modified_count

    @translated
    async def claim(self, task_id: str, drone_id: str) -> TaskRecord | None:
        return await self._claims.submit((task_id, drone_id))

    async def _claim(self, claims: Sequence[tuple[str, str]]) -> list[TaskRecord | None]:
        if len(claims) > 1:
            return await claim_many(self._tasks_repairable, claims)
        (task_id, drone_id), now = claims[0], now_iso()
        claimed = await transition(
            self._tasks_repairable, claimable(task_id, drone_id, now), claim_update(now)
        )
        return [claimed]

    @translated
    async def release(
        self,
        task_id: str,
        drone_id: str,
        *,
        reason: ErrorCode | None = None,
        attempt: int | None = None,
    ) -> TaskRecord | None:
        update = release_update(reason)
        held: dict[str, object] = {
            "task_id": task_id,
            "drone_id": drone_id,
            "delivery": "delivered",
            "status": LIVE,
        }
        if attempt is not None:
            held["attempts"] = attempt
        return await transition(self._tasks, held, update)

    @translated
    async def held_by(self, drone_id: str) -> list[TaskRecord]:
        cursor = self._tasks.find(
            {"drone_id": drone_id, "delivery": "delivered", "status": LIVE}, TASK_PROJECTION
        ).sort([("delivered_at", ASCENDING), ("_id", ASCENDING)])
        return [task_record(document) async for document in cursor]

    @translated
    async def overdue(self, now: str, limit: int) -> list[TaskRecord]:
        if limit < 1:
            return []
        cursor = (
            self._tasks.find(
                {
                    "deadline_at": {"$type": "string", "$lt": now},
                    "delivery": "delivered",
                    "status": LIVE,
                },
                TASK_PROJECTION,
            )
            .sort("deadline_at", ASCENDING)
            .limit(limit)
        )
        return [task_record(document) async for document in cursor]

    @translated
    async def expire(self, now: str, limit: int) -> list[TaskRecord]:
        if limit < 1:
            return []
        stale = {
            "status": "pending",
            "delivery": "queued",
            "expires_at": {"$type": "string", "$lt": now},
        }
        candidates = (
            self._tasks.find(stale, {"task_id": True}).sort("expires_at", ASCENDING).limit(limit)
        )
        changed_at = now_iso()
        expired = []
        async for document in candidates:
            # The filter is checked again: a drone may have claimed it since the find.
            task = await transition(
                self._tasks,
                {**stale, "task_id": document["task_id"]},
                expired_update(changed_at),
            )
            if task is not None:
                expired.append(task)
        # Oldest task first, as the SQLite store returns them (candidates come by expires_at).
        return sorted(expired, key=lambda task: (task.created_at, task.task_id))

    # --- drone reports ----------------------------------------------------------------------
    @translated
    async def apply_status(self, task_id: str, drone_id: str, status: str) -> StatusOutcome:
        if status not in DRONE_REPORTABLE:
            raise StatusNotReportable(task_id, f"a drone may not report status {status!r}")
        task = await transition(
            self._tasks_repairable,
            {"task_id": task_id, "drone_id": drone_id, "status": MAY_START},
            processing_update(),
        )
        if task is not None:
            return StatusOutcome(task)
        task = await self.get_task(task_id)
        if task is None:
            raise TaskNotFound(task_id)
        if task.drone_id != drone_id:
            raise TaskNotYours(task_id, task=task)
        raise TaskAlreadyFinished(task_id, task=task)

    @translated
    async def save_result(self, result: ResultRecord) -> ResultOutcome:
        outcome = await self._results_batch.submit(result)
        if isinstance(outcome, TaskError):
            raise outcome
        return outcome

    async def _save_results(
        self, batch: Sequence[ResultRecord]
    ) -> Sequence[ResultOutcome | TaskError]:
        if len(batch) > 1:
            return await write_results(self._tasks, self._results_repairable, batch)
        try:
            return [await write_result(self._tasks, self._results_repairable, batch[0])]
        except TaskError as refused:
            return [refused]

    @translated
    async def cancel(self, task_id: str) -> CancelOutcome:
        now = now_iso()
        # `delivery` is left as it was, so the returned task still says whether a drone held it.
        task = await transition(
            self._tasks,
            {"task_id": task_id, "status": MAY_CANCEL},
            cancelled_update(now),
        )
        if task is not None:
            return CancelOutcome(task, was_delivered=task.delivery == "delivered")
        task = await self.get_task(task_id)
        if task is None:
            raise TaskNotFound(task_id)
        raise TaskAlreadyFinished(task_id, task=task)

    # --- notification bookkeeping ----------------------------------------------------------
    @translated
    async def mark_notified(self, task_ids: Sequence[str]) -> None:
        if task_ids:
            await self._tasks.update_many(
                {
                    "task_id": {"$in": list(task_ids)},
                    "notified_at": None,
                    "finished_at": {"$type": "string"},
                },
                {"$set": {"notified_at": now_iso()}},
            )

    @translated
    async def unnotified(self, limit: int) -> list[tuple[TaskRecord, ResultRecord | None]]:
        return await unnotified_with_results(self._tasks, self._results, limit)

    # --- tokens ----------------------------------------------------------------------------
    @translated
    async def record_token(self, token: TokenRecord) -> None:
        await tokens.record_token(self._tokens, token)

    @translated
    async def revoke_token(self, jti: str) -> TokenRecord:
        return await tokens.revoke_token(self._tokens, jti)

    @translated
    async def list_tokens(self, limit: int) -> list[TokenRecord]:
        return await tokens.list_tokens(self._tokens, limit)

    @translated
    async def token_revoked(self, jti: str) -> bool:
        return await tokens.token_revoked(self._tokens, jti)

    @translated
    async def revoked_since(self, since: str) -> list[str]:
        return await tokens.revoked_since(self._tokens, since)
