"""What MongoTaskStore keeps in MongoDB: collection names, indexes, projections, and the
conversion of documents to the port's records."""

from datetime import timedelta
from typing import Any, Final

from pymongo import ASCENDING, DESCENDING, IndexModel

from shared.clock import format_timestamp, parse_timestamp
from shared.lifecycle import ACTIVE_STATUSES, TaskStatus, sources
from shared.models import NewTask, ResultRecord, TaskRecord

Document = dict[str, Any]

DEFAULT_DATABASE: Final = "droneflow"
TASKS: Final = "processingTasks"
RESULTS: Final = "processingResults"
# Facts about the store itself, one document each: which life of it the dispatchers have routed.
STATE: Final = "storeState"
ROUTED_INCARNATION: Final = "routed_incarnation"


def status_in(statuses: tuple[TaskStatus, ...]) -> Document:
    return {"$in": list(statuses)}


# The status filters of the transitions, derived from the state machine.
LIVE: Final = status_in(ACTIVE_STATUSES)
MAY_START: Final = status_in(sources("processing"))
MAY_END_WITH_RESULT: Final = status_in(sources("completed", "failed"))
MAY_CANCEL: Final = status_in(sources("cancelled"))

# The partial filters of the sweeps' indexes; each sweep's query includes its filter.
UNDISPATCHED: Final = {"dispatched_at": None, "delivery": "queued"}
ROUTED: Final = {"dispatched_at": {"$type": "string"}, "delivery": "queued"}
DUE: Final = {"deadline_at": {"$type": "string"}}
EXPIRABLE: Final = {"expires_at": {"$type": "string"}, "status": "pending", "delivery": "queued"}
UNNOTIFIED: Final = {"notified_at": None, "finished_at": {"$type": "string"}}

# What a task document holds beyond TaskRecord: expires_at (created_at + ttl_s) and
# deadline_at (delivered_at + timeout_s) make the sweeps index scans; _result is step 1 of
# save_result (results.py).
# _claim is the token of the last claim: a batch of claims reads back which ones it won.
TASK_PROJECTION: Final = {
    "_id": False,
    "_result": False,
    "_claim": False,
    "expires_at": False,
    "deadline_at": False,
}
TASK_WITH_RESULT: Final = {"_id": False, "_claim": False, "expires_at": False, "deadline_at": False}
TASK_WITH_CLAIM: Final = {"_id": False, "_result": False, "expires_at": False, "deadline_at": False}
# The task and only the id of its embedded result: which result won is all a batch of
# save_results reads there, and the result's data need not be sent back and decoded.
TASK_WITH_RESULT_ID: Final = {
    **TASK_WITH_RESULT,
    **{f"_result.{field}": False for field in ResultRecord.model_fields if field != "result_id"},
}

# An index costs every write that changes its keys, so each one serves a query, and the sweeps'
# are partial: they hold only the tasks the sweep looks for (a few in flight), not every task
# ever stored. A partial index is chosen only for queries that imply its filter, so the sweeps
# repeat it (`$type: "string"` is what `$lt` on a string matches anyway).
# tests/contract/test_mongo_indexes.py checks with the profiler: no COLLSCAN.
TASK_INDEXES: Final = [
    # The spec's indexes (docs/DATA_PROCESSING_FLOW.md, "Database Indexes"): operators and
    # tools written against the spec may look for them, so they stay, though the compounds
    # below lead with the same fields. app_id and drone_id never change after the insert.
    IndexModel([("task_id", ASCENDING)], name="ux_task_id", unique=True),
    IndexModel([("app_id", ASCENDING)], name="ix_app_id"),
    IndexModel([("drone_id", ASCENDING)], name="ix_drone_id"),
    IndexModel([("status", ASCENDING)], name="ix_status"),
    IndexModel([("created_at", ASCENDING)], name="ix_created_at"),
    # pending_for_drone, held_by, count_queued.
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
    # count_pending: only the tasks still waiting, so it stays small and cheap to maintain.
    IndexModel(
        [("app_id", ASCENDING)],
        name="ix_app_pending",
        partialFilterExpression={"status": "pending"},
    ),
    IndexModel(
        [("app_id", ASCENDING), ("idempotency_key", ASCENDING)],
        name="ux_idempotency",
        unique=True,
        # Only documents that have a key: tasks without one must not collide on null.
        partialFilterExpression={"idempotency_key": {"$type": "string"}},
    ),
    # list_tasks, by its optional filters.
    IndexModel([("updated_at", ASCENDING), ("task_id", ASCENDING)], name="ix_updated"),
    IndexModel(
        [("app_id", ASCENDING), ("updated_at", ASCENDING), ("task_id", ASCENDING)],
        name="ix_app_updated",
    ),
    IndexModel(
        [("status", ASCENDING), ("updated_at", ASCENDING), ("task_id", ASCENDING)],
        name="ix_status_updated",
    ),
    # The sweeps.
    IndexModel(
        [("updated_at", ASCENDING)],
        name="ix_undispatched_at",
        partialFilterExpression=UNDISPATCHED,
    ),
    IndexModel([("dispatched_at", ASCENDING)], name="ix_routed", partialFilterExpression=ROUTED),
    IndexModel([("deadline_at", ASCENDING)], name="ix_deadline", partialFilterExpression=DUE),
    IndexModel([("expires_at", ASCENDING)], name="ix_expires", partialFilterExpression=EXPIRABLE),
    IndexModel(
        [("finished_at", ASCENDING), ("task_id", ASCENDING)],
        name="ix_finished_unnotified",
        partialFilterExpression=UNNOTIFIED,
    ),
]
# Indexes earlier versions made, dropped on start-up: replaced by the partial ones (their
# names are new, so an old definition never conflicts).
RETIRED_TASK_INDEXES: Final = (
    "ix_undispatched",
    "ix_overdue",
    "ix_expire",
    "ix_unnotified",
)
RESULT_INDEXES: Final = [
    # The spec's.
    IndexModel([("task_id", ASCENDING)], name="ux_task_id", unique=True),
    IndexModel([("drone_id", ASCENDING)], name="ix_drone_id"),
    IndexModel([("timestamp", ASCENDING)], name="ix_timestamp"),
    # results_for_drone.
    IndexModel(
        [("drone_id", ASCENDING), ("timestamp", ASCENDING), ("_id", ASCENDING)],
        name="ix_drone_timestamp",
    ),
]
RETIRED_RESULT_INDEXES: Final[tuple[str, ...]] = ()


def task_document(task: TaskRecord, new: NewTask, now: str) -> Document:
    """The document of a new task: the record, and when it expires."""
    document = task.model_dump()
    document["expires_at"] = (
        None
        if new.ttl_s is None
        else format_timestamp(parse_timestamp(now) + timedelta(seconds=new.ttl_s))
    )
    document["deadline_at"] = None
    return document


def task_record(document: Document) -> TaskRecord:
    return TaskRecord.model_validate(document)


def result_record(document: Document) -> ResultRecord:
    return ResultRecord.model_validate({**document, "result_id": str(document["_id"])})
