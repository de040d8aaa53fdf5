"""MongoTaskStore: the TaskStore in MongoDB, collections `processingTasks` and
`processingResults` as the spec names them. The only module that imports pymongo.

Every transition is one `find_one_and_update` whose filter is the precondition (status,
delivery, drone), so racing writers on one document serialise in the server and exactly one
wins. Where the new value depends on the old one (attempts, deadlines, max_attempts) the update
is a pipeline, still one atomic write.

save_result spans two documents and MongoDB (standalone) has no transaction, so the write order
is what keeps it safe:

1. End the task, guarded by status (non-terminal), and embed the result in it as `_result`.
   This write is the commit point: it decides which result wins and the task is never ended
   twice, however many writers race.
2. Upsert the result into processingResults by task_id with `$setOnInsert` of that same
   document (same ObjectId), so repeating it changes nothing.

A crash between 1 and 2 leaves an ended task whose result is only embedded. Every later
`save_result` for the task (the broker redelivers the unacked message), `get_result` and
`unnotified` find the embedded copy and redo step 2, so the result is never lost and never
differs from the one that ended the task. Inserting the result first instead would leave,
after a crash or a lost race with `cancel`, a stored result for a task it did not end.
"""

import contextlib
import functools
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, Final, ParamSpec, Self, TypeVar

from bson import ObjectId
from bson.errors import BSONError

# This module is the one place pymongo is allowed (pyproject: flake8-tidy-imports banned-api).
from pymongo import (
    ASCENDING,
    DESCENDING,
    AsyncMongoClient,
    IndexModel,
    ReturnDocument,
)
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConfigurationError as MongoConfigurationError
from pymongo.errors import (
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    PyMongoError,
    WTimeoutError,
)

from shared.clock import format_timestamp, now_iso, parse_timestamp
from shared.errors import ConfigurationError, StoreError, StoreUnavailable, TaskNotFound
from shared.models import ErrorCode, NewTask, ResultRecord, TaskRecord
from shared.store import CancelOutcome, CreateOutcome, ResultOutcome, StatusOutcome, TaskPage
from shared.store.cursor import decode_cursor, encode_cursor

P = ParamSpec("P")
T = TypeVar("T")
Document = dict[str, Any]

DEFAULT_DATABASE: Final = "droneflow"
TASKS: Final = "processingTasks"
RESULTS: Final = "processingResults"
LIVE: Final = {"$in": ["pending", "processing"]}
CANCELLED_MESSAGE: Final = "cancelled by the application"
EXPIRED_MESSAGE: Final = "no drone took the task within its ttl_s"

# What a task document holds beyond TaskRecord: expires_at (created_at + ttl_s) and
# deadline_at (delivered_at + timeout_s) make the sweeps index scans; _result is step 1 above.
_TASK_PROJECTION: Final = {
    "_id": False,
    "_result": False,
    "expires_at": False,
    "deadline_at": False,
}
_TASK_WITH_RESULT: Final = {"_id": False, "expires_at": False, "deadline_at": False}

TASK_INDEXES: Final = [
    # The spec's indexes.
    IndexModel([("task_id", ASCENDING)], name="ux_task_id", unique=True),
    IndexModel([("app_id", ASCENDING)], name="ix_app_id"),
    IndexModel([("drone_id", ASCENDING)], name="ix_drone_id"),
    IndexModel([("status", ASCENDING)], name="ix_status"),
    IndexModel([("created_at", ASCENDING)], name="ix_created_at"),
    # The composites the queries need, as in the SQLite store.
    IndexModel(
        [
            ("drone_id", ASCENDING),
            ("status", ASCENDING),
            ("priority", DESCENDING),
            ("created_at", ASCENDING),
            ("_id", ASCENDING),
        ],
        name="ix_drone_pending",
    ),
    IndexModel(
        [("app_id", ASCENDING), ("idempotency_key", ASCENDING)],
        name="ux_idempotency",
        unique=True,
        # Only documents that have a key: tasks without one must not collide on null.
        partialFilterExpression={"idempotency_key": {"$type": "string"}},
    ),
    IndexModel([("updated_at", ASCENDING), ("task_id", ASCENDING)], name="ix_updated"),
    IndexModel(
        [("app_id", ASCENDING), ("updated_at", ASCENDING), ("task_id", ASCENDING)],
        name="ix_app_updated",
    ),
    IndexModel(
        [("status", ASCENDING), ("updated_at", ASCENDING), ("task_id", ASCENDING)],
        name="ix_status_updated",
    ),
    # The sweeps. Partial filters cannot say "is null", so these are plain compound indexes
    # whose leading equality on null skips the rows a sweep does not want.
    IndexModel([("dispatched_at", ASCENDING), ("updated_at", ASCENDING)], name="ix_undispatched"),
    IndexModel([("deadline_at", ASCENDING)], name="ix_overdue"),
    IndexModel([("status", ASCENDING), ("expires_at", ASCENDING)], name="ix_expire"),
    IndexModel(
        [("notified_at", ASCENDING), ("finished_at", ASCENDING), ("task_id", ASCENDING)],
        name="ix_unnotified",
    ),
]
RESULT_INDEXES: Final = [
    IndexModel([("task_id", ASCENDING)], name="ux_task_id", unique=True),
    IndexModel([("drone_id", ASCENDING)], name="ix_drone_id"),
    IndexModel([("timestamp", ASCENDING)], name="ix_timestamp"),
    IndexModel(
        [("drone_id", ASCENDING), ("timestamp", ASCENDING), ("_id", ASCENDING)],
        name="ix_drone_timestamp",
    ),
]


def _translated(method: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """No pymongo exception leaves this module."""

    @functools.wraps(method)
    async def translating(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except PyMongoError as exc:
            raise _translate(exc) from None
        except BSONError as exc:  # a document BSON cannot hold, e.g. a key with a NUL in it
            raise StoreError(f"MongoDB: {exc}") from None

    return translating


def _translate(exc: PyMongoError) -> StoreError:
    # ConnectionFailure covers AutoReconnect, NetworkTimeout, NotPrimaryError and
    # ServerSelectionTimeoutError; the labels mark what the server itself calls retryable.
    if (
        isinstance(exc, ConnectionFailure | ExecutionTimeout | WTimeoutError)
        or exc.has_error_label("RetryableWriteError")
        or exc.has_error_label("TransientTransactionError")
    ):
        return StoreUnavailable(f"MongoDB: {exc}")
    return StoreError(f"MongoDB: {exc}")


class MongoTaskStore:
    """The TaskStore port on MongoDB; `async with MongoTaskStore(url) as store`. The database is
    `database`, else the URL's default database, else "droneflow". Raises StoreUnavailable for
    network and server-selection failures, StoreError for other server errors, and
    TaskNotFound from `save_result` for an unknown task."""

    def __init__(self, url: str, database: str | None = None) -> None:
        self.url = url
        self.database = database
        self._client: AsyncMongoClient[Document] | None = None
        self._tasks: AsyncCollection[Document]
        self._results: AsyncCollection[Document]

    @_translated
    async def __aenter__(self) -> Self:
        try:
            client: AsyncMongoClient[Document] = AsyncMongoClient(self.url)
        except (MongoConfigurationError, ValueError) as exc:  # ValueError: a bad host or port
            raise ConfigurationError(f"DRONEFLOW_STORE_URL: {exc}") from None
        try:
            db: AsyncDatabase[Document] = (
                client[self.database]
                if self.database
                else client.get_default_database(default=DEFAULT_DATABASE)
            )
            self._tasks = db[TASKS]
            self._results = db[RESULTS]
            await self._tasks.create_indexes(TASK_INDEXES)
            await self._results.create_indexes(RESULT_INDEXES)
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

    @_translated
    async def drop_database(self) -> None:
        """Delete this store's database and everything in it (tests, resets)."""
        await self._tasks.database.client.drop_database(self._tasks.database.name)

    # --- creating and reading -------------------------------------------------------------
    @_translated
    async def create_task(self, new: NewTask) -> CreateOutcome:
        now = now_iso()
        task = TaskRecord(
            **new.model_dump(),
            created_at=now,
            updated_at=now,
        )
        document = task.model_dump()
        document["expires_at"] = (
            None
            if new.ttl_s is None
            else format_timestamp(parse_timestamp(now) + timedelta(seconds=new.ttl_s))
        )
        document["deadline_at"] = None
        try:
            await self._tasks.insert_one(document)
        except DuplicateKeyError:
            # The idempotency key is taken, or the same task_id was retried.
            existing = None
            if new.idempotency_key is not None:
                existing = await self._tasks.find_one(
                    {"app_id": new.app_id, "idempotency_key": new.idempotency_key},
                    _TASK_PROJECTION,
                )
            if existing is None:
                existing = await self._tasks.find_one({"task_id": new.task_id}, _TASK_PROJECTION)
            if existing is None:
                raise StoreError(f"task {new.task_id} was neither inserted nor found") from None
            return CreateOutcome(_task(existing), created=False)
        return CreateOutcome(task, created=True)

    @_translated
    async def get_task(self, task_id: str) -> TaskRecord | None:
        document = await self._tasks.find_one({"task_id": task_id}, _TASK_PROJECTION)
        return None if document is None else _task(document)

    @_translated
    async def pending_for_drone(self, drone_id: str, limit: int) -> list[TaskRecord]:
        if limit < 1:  # limit(0) means "no limit" to MongoDB
            return []
        cursor = (
            self._tasks.find({"drone_id": drone_id, "status": "pending"}, _TASK_PROJECTION)
            .sort([("priority", DESCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)])
            .limit(limit)
        )
        return [_task(document) async for document in cursor]

    @_translated
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
            self._tasks.find(query, _TASK_PROJECTION)
            .sort([("updated_at", ASCENDING), ("task_id", ASCENDING)])
            .limit(limit + 1)
        )
        tasks = [_task(document) async for document in found]
        if len(tasks) <= limit:
            return TaskPage(tasks, None)
        del tasks[limit:]
        return TaskPage(tasks, encode_cursor(tasks[-1].updated_at, tasks[-1].task_id))

    @_translated
    async def get_result(self, task_id: str) -> ResultRecord | None:
        document = await self._results.find_one({"task_id": task_id})
        if document is None:
            ended = await self._tasks.find_one(
                {"task_id": task_id, "_result": {"$exists": True}}, {"_result": True}
            )
            if ended is None:
                return None
            document = await self._store_result(ended["_result"])
        return _result(document)

    @_translated
    async def results_for_drone(self, drone_id: str, limit: int) -> list[ResultRecord]:
        if limit < 1:
            return []
        cursor = (
            self._results.find({"drone_id": drone_id})
            .sort([("timestamp", DESCENDING), ("_id", DESCENDING)])
            .limit(limit)
        )
        return [_result(document) async for document in cursor]

    # --- dispatch and delivery ------------------------------------------------------------
    @_translated
    async def mark_dispatched(self, task_id: str) -> TaskRecord | None:
        return await self._transition(
            {"task_id": task_id, "delivery": "queued", "status": LIVE},
            {"$set": {"dispatched_at": now_iso()}},
        )

    @_translated
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
                _TASK_PROJECTION,
            )
            .sort("updated_at", ASCENDING)
            .limit(limit)
        )
        return [_task(document) async for document in cursor]

    @_translated
    async def routed_before(self, routed_before: str, limit: int) -> list[TaskRecord]:
        if limit < 1:
            return []
        cursor = (
            self._tasks.find(
                {
                    "dispatched_at": {"$lt": routed_before, "$ne": None},
                    "delivery": "queued",
                    "status": LIVE,
                },
                _TASK_PROJECTION,
            )
            .sort("dispatched_at", ASCENDING)
            .limit(limit)
        )
        return [_task(document) async for document in cursor]

    @_translated
    async def reset_dispatch(self) -> int:
        outcome = await self._tasks.update_many(
            {"dispatched_at": {"$ne": None}, "delivery": "queued", "status": LIVE},
            {"$set": {"dispatched_at": None}},
        )
        return outcome.modified_count

    @_translated
    async def claim(self, task_id: str, drone_id: str) -> TaskRecord | None:
        now = now_iso()
        moment = parse_timestamp(now)
        # timeout_s in whole milliseconds, halves rounded up as SQLite's printf('%.3f') does:
        # $round rounds halves to even, and 1.0005 * 1000 is 1000.4999… in binary, so round
        # the decimal value instead.
        timeout_ms = {
            "$toLong": {
                "$floor": {"$add": [{"$multiply": [{"$toDecimal": "$timeout_s"}, 1000]}, 0.5]}
            }
        }
        deadline = {
            "$cond": [
                {"$isNumber": "$timeout_s"},
                {
                    "$dateToString": {
                        "format": "%Y-%m-%dT%H:%M:%S.%LZ",
                        "date": {"$add": [moment, timeout_ms]},
                    }
                },
                None,
            ]
        }
        # A pending task past its ttl is refused, as `expire` will fail it; one a drone
        # already started (processing) has outlived its ttl on purpose.
        return await self._transition(
            {
                "task_id": task_id,
                "drone_id": drone_id,
                "delivery": "queued",
                "status": LIVE,
                "$or": [
                    {"status": "processing"},
                    {"expires_at": None},
                    {"expires_at": {"$gte": now}},
                ],
            },
            [
                {
                    "$set": {
                        "delivery": "delivered",
                        "attempts": {"$add": ["$attempts", 1]},
                        "delivered_at": {"$literal": now},
                        "updated_at": {"$literal": now},
                        "deadline_at": deadline,
                    }
                }
            ],
        )

    @_translated
    async def release(
        self,
        task_id: str,
        drone_id: str,
        *,
        reason: ErrorCode | None = None,
        attempt: int | None = None,
    ) -> TaskRecord | None:
        return await self._release(task_id, drone_id, reason, attempt)

    async def _release(
        self, task_id: str, drone_id: str, reason: ErrorCode | None, attempt: int | None = None
    ) -> TaskRecord | None:
        now = {"$literal": now_iso()}
        give_up = {"$gte": ["$attempts", "$max_attempts"]}
        message = {
            "$concat": [
                "no result after ",
                {"$toString": "$attempts"},
                " attempt(s)",
                {"$literal": "" if reason is None else f" (last: {reason})"},
            ]
        }
        # A $set stage computes every field from the document as it was before the stage.
        held: dict[str, object] = {
            "task_id": task_id,
            "drone_id": drone_id,
            "delivery": "delivered",
            "status": LIVE,
        }
        if attempt is not None:
            held["attempts"] = attempt
        return await self._transition(
            held,
            [
                {
                    "$set": {
                        "status": {"$cond": [give_up, "failed", "$status"]},
                        "error_code": {"$cond": [give_up, "max_attempts", "$error_code"]},
                        "error_message": {"$cond": [give_up, message, "$error_message"]},
                        "finished_at": {"$cond": [give_up, now, "$finished_at"]},
                        "delivery": "queued",
                        "dispatched_at": None,
                        "deadline_at": None,
                        "updated_at": now,
                    }
                }
            ],
        )

    @_translated
    async def release_drone(self, drone_id: str) -> list[TaskRecord]:
        held = self._tasks.find(
            {"drone_id": drone_id, "delivery": "delivered", "status": LIVE}, {"task_id": True}
        )
        released = []
        async for document in held:
            task = await self._release(document["task_id"], drone_id, None)
            if task is not None:
                released.append(task)
        return released

    @_translated
    async def overdue(self, now: str, limit: int) -> list[TaskRecord]:
        if limit < 1:
            return []
        cursor = (
            self._tasks.find(
                {"deadline_at": {"$lt": now}, "delivery": "delivered", "status": LIVE},
                _TASK_PROJECTION,
            )
            .sort("deadline_at", ASCENDING)
            .limit(limit)
        )
        return [_task(document) async for document in cursor]

    @_translated
    async def expire(self, now: str, limit: int) -> list[TaskRecord]:
        if limit < 1:
            return []
        stale = {"status": "pending", "delivery": "queued", "expires_at": {"$lt": now}}
        candidates = (
            self._tasks.find(stale, {"task_id": True}).sort("expires_at", ASCENDING).limit(limit)
        )
        changed_at = now_iso()
        expired = []
        async for document in candidates:
            # The filter is checked again: a drone may have claimed it since the find.
            task = await self._transition(
                {**stale, "task_id": document["task_id"]},
                {
                    "$set": {
                        "status": "failed",
                        "error_code": "expired",
                        "error_message": EXPIRED_MESSAGE,
                        "finished_at": changed_at,
                        "updated_at": changed_at,
                    }
                },
            )
            if task is not None:
                expired.append(task)
        # Oldest task first, as the SQLite store returns them (candidates come by expires_at).
        return sorted(expired, key=lambda task: (task.created_at, task.task_id))

    # --- drone reports ----------------------------------------------------------------------
    @_translated
    async def apply_status(self, task_id: str, drone_id: str, status: str) -> StatusOutcome:
        if status != "processing":
            return StatusOutcome("invalid", None)
        now = {"$literal": now_iso()}
        task = await self._transition(
            {"task_id": task_id, "drone_id": drone_id, "status": LIVE},
            [
                {
                    "$set": {
                        "status": "processing",
                        "started_at": {"$ifNull": ["$started_at", now]},
                        "updated_at": now,
                    }
                }
            ],
        )
        if task is not None:
            return StatusOutcome("applied", task)
        task = await self.get_task(task_id)
        if task is None:
            return StatusOutcome("not_found", None)
        if task.drone_id != drone_id:
            return StatusOutcome("not_yours", task)
        return StatusOutcome("ignored", task)

    @_translated
    async def save_result(self, result: ResultRecord) -> ResultOutcome:
        # The module docstring explains the order of these writes.
        result_id = (
            ObjectId(result.result_id) if ObjectId.is_valid(result.result_id) else ObjectId()
        )
        if str(result_id) != result.result_id:  # not an ObjectId's hex, or not in lower case
            result = result.model_copy(update={"result_id": str(result_id)})
        document = {"_id": result_id, **result.model_dump(exclude={"result_id"})}
        now = now_iso()
        status, error_code, error_message = (
            ("completed", None, None)
            if result.success
            else ("failed", "drone_error", result.error_message)
        )
        task = await self._transition(
            {"task_id": result.task_id, "status": LIVE},
            {
                "$set": {
                    "status": status,
                    "error_code": error_code,
                    "error_message": error_message,
                    "finished_at": now,
                    "updated_at": now,
                    "deadline_at": None,
                    "_result": document,
                }
            },
        )
        if task is not None:
            await self._store_result(document)
            return ResultOutcome(task, result, stored=True)
        ended = await self._tasks.find_one({"task_id": result.task_id}, _TASK_WITH_RESULT)
        if ended is None:
            raise TaskNotFound(result.task_id)
        stored = await self._results.find_one({"task_id": result.task_id})
        if stored is None and "_result" in ended:
            stored = await self._store_result(ended["_result"])  # step 2 of a crashed call
        ended.pop("_result", None)
        return ResultOutcome(
            _task(ended), None if stored is None else _result(stored), stored=False
        )

    @_translated
    async def cancel(self, task_id: str) -> CancelOutcome | None:
        now = now_iso()
        # `delivery` is left as it was, so the returned task still says whether a drone held it.
        task = await self._transition(
            {"task_id": task_id, "status": LIVE},
            {
                "$set": {
                    "status": "cancelled",
                    "error_code": "cancelled",
                    "error_message": CANCELLED_MESSAGE,
                    "finished_at": now,
                    "updated_at": now,
                    "deadline_at": None,
                }
            },
        )
        if task is not None:
            return CancelOutcome(task, cancelled=True, was_delivered=task.delivery == "delivered")
        task = await self.get_task(task_id)
        if task is None:
            return None
        return CancelOutcome(task, cancelled=False, was_delivered=False)

    # --- notification bookkeeping ----------------------------------------------------------
    @_translated
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

    @_translated
    async def unnotified(self, limit: int) -> list[tuple[TaskRecord, ResultRecord | None]]:
        if limit < 1:
            return []
        cursor = (
            self._tasks.find(
                {"notified_at": None, "finished_at": {"$type": "string"}}, _TASK_WITH_RESULT
            )
            .sort([("finished_at", ASCENDING), ("task_id", ASCENDING)])
            .limit(limit)
        )
        ended = [document async for document in cursor]
        if not ended:
            return []
        stored = {
            document["task_id"]: document
            async for document in self._results.find(
                {"task_id": {"$in": [document["task_id"] for document in ended]}}
            )
        }
        pairs: list[tuple[TaskRecord, ResultRecord | None]] = []
        for document in ended:
            embedded = document.pop("_result", None)
            result = stored.get(document["task_id"])
            if result is None and embedded is not None:
                result = await self._store_result(embedded)  # step 2 of a crashed save_result
            pairs.append((_task(document), None if result is None else _result(result)))
        return pairs

    # --- helpers ----------------------------------------------------------------------------
    async def _transition(
        self, precondition: Document, update: Document | list[Document]
    ) -> TaskRecord | None:
        document = await self._tasks.find_one_and_update(
            precondition,
            update,
            projection=_TASK_PROJECTION,
            return_document=ReturnDocument.AFTER,
        )
        return None if document is None else _task(document)

    async def _store_result(self, document: Document) -> Document:
        """Step 2 of save_result: idempotent, whoever runs it and however often."""
        fields = {key: value for key, value in document.items() if key != "task_id"}
        # DuplicateKeyError: a concurrent upsert of the same result inserted it first.
        with contextlib.suppress(DuplicateKeyError):
            await self._results.update_one(
                {"task_id": document["task_id"]}, {"$setOnInsert": fields}, upsert=True
            )
        return document


def _task(document: Document) -> TaskRecord:
    return TaskRecord.model_validate(document)


def _result(document: Document) -> ResultRecord:
    return ResultRecord.model_validate({**document, "result_id": str(document["_id"])})
