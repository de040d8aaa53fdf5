"""save_result and the reads that finish its work.

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
from collections.abc import Sequence

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from shared.clock import now_iso
from shared.errors import TaskAlreadyFinished, TaskError, TaskNotFound
from shared.lifecycle import result_ending
from shared.models import ResultRecord, TaskRecord
from shared.store import ResultOutcome
from shared.store.mongo.documents import (
    MAY_END_WITH_RESULT,
    TASK_WITH_RESULT,
    TASK_WITH_RESULT_ID,
    TASKS,
    Document,
    result_record,
    task_record,
)
from shared.store.mongo.transitions import transition

DUPLICATE_KEY = 11000


def ending(result: ResultRecord, now: str) -> tuple[ResultRecord, Document, Document, Document]:
    """(the result with an ObjectId as its id, its document, step 1's filter and update)."""
    result_id = ObjectId(result.result_id) if ObjectId.is_valid(result.result_id) else ObjectId()
    if str(result_id) != result.result_id:  # not an ObjectId's hex, or not in lower case
        result = result.model_copy(update={"result_id": str(result_id)})
    document = {"_id": result_id, **result.model_dump(exclude={"result_id"})}
    status, error_code, error_message = result_ending(result.success, result.error_message)
    update = {
        "$set": {
            "status": status,
            "error_code": error_code,
            "error_message": error_message,
            "finished_at": now,
            "updated_at": now,
            "deadline_at": None,
            "_result": document,
        }
    }
    return result, document, {"task_id": result.task_id, "status": MAY_END_WITH_RESULT}, update


async def write_result(
    tasks: AsyncCollection[Document], results: AsyncCollection[Document], result: ResultRecord
) -> ResultOutcome:
    """TaskStore.save_result; the module docstring explains the order of these writes."""
    result, document, precondition, update = ending(result, now_iso())
    task = await transition(tasks, precondition, update)
    if task is not None:
        await store_result(results, document)
        return ResultOutcome(task, result)
    return await already_finished(tasks, results, result)


async def write_results(
    tasks: AsyncCollection[Document],
    results: AsyncCollection[Document],
    batch: Sequence[ResultRecord],
) -> list[ResultOutcome | TaskError]:
    """save_result of several results in three round trips instead of two each, same order of
    writes: step 1 for all, a read of the tasks that tells which results won (their `_result`
    is ours), step 2 for those. The others take the one-at-a-time path, which raises what
    save_result raises.

    Step 1 is one statement that picks each task's values by its id, not one statement per
    result: mongod spent a fifth less per result (243 against 307 µs at 10 a batch, bench
    box). Two results of one task in a batch both pick the first; the read tells it won."""
    now = now_iso()
    endings = [ending(result, now) for result in batch]
    task_ids = [result.task_id for result in batch]
    changes = [update["$set"] for _, _, _, update in endings]
    position = {"$indexOfArray": [{"$literal": task_ids}, "$task_id"]}

    def value_of(field: str) -> Document:
        values = [change[field] for change in changes]
        if all(value == values[0] for value in values):
            return {"$literal": values[0]}
        return {"$arrayElemAt": [{"$literal": values}, position]}

    await tasks.update_many(
        {"task_id": {"$in": task_ids}, "status": MAY_END_WITH_RESULT},
        [{"$set": {field: value_of(field) for field in changes[0]}}],
    )
    ended = {
        document["task_id"]: document
        async for document in tasks.find({"task_id": {"$in": task_ids}}, TASK_WITH_RESULT_ID)
    }
    outcomes: list[ResultOutcome | TaskError] = []
    won: list[Document] = []
    for result, document, _, _ in endings:
        task = ended.get(result.task_id)
        if task is not None and task.get("_result", {}).get("_id") == document["_id"]:
            won.append(document)
            outcomes.append(ResultOutcome(task_record(without_result(task)), result))
            continue
        try:
            outcomes.append(await already_finished(tasks, results, result))
        except TaskError as refused:
            outcomes.append(refused)
    await store_results(results, won)
    return outcomes


def without_result(document: Document) -> Document:
    return {key: value for key, value in document.items() if key != "_result"}


async def already_finished(
    tasks: AsyncCollection[Document], results: AsyncCollection[Document], result: ResultRecord
) -> ResultOutcome:
    """Step 1 found no task it may end: raise why, finishing step 2 of a crashed call."""
    ended = await tasks.find_one({"task_id": result.task_id}, TASK_WITH_RESULT)
    if ended is None:
        raise TaskNotFound(result.task_id)
    stored = await results.find_one({"task_id": result.task_id})
    if stored is None and "_result" in ended:
        stored = await store_result(results, ended["_result"])  # step 2 of a crashed call
    ended.pop("_result", None)
    raise TaskAlreadyFinished(
        result.task_id,
        task=task_record(ended),
        result=None if stored is None else result_record(stored),
    )


async def read_result(
    tasks: AsyncCollection[Document], results: AsyncCollection[Document], task_id: str
) -> ResultRecord | None:
    """TaskStore.get_result, finishing step 2 of a crashed save_result."""
    document = await results.find_one({"task_id": task_id})
    if document is None:
        ended = await tasks.find_one(
            {"task_id": task_id, "_result": {"$exists": True}}, {"_result": True}
        )
        if ended is None:
            return None
        document = await store_result(results, ended["_result"])
    return result_record(document)


async def unnotified_with_results(
    tasks: AsyncCollection[Document], results: AsyncCollection[Document], limit: int
) -> list[tuple[TaskRecord, ResultRecord | None]]:
    """TaskStore.unnotified, finishing step 2 of a crashed save_result."""
    if limit < 1:
        return []
    cursor = (
        tasks.find({"notified_at": None, "finished_at": {"$type": "string"}}, TASK_WITH_RESULT)
        .sort([("finished_at", ASCENDING), ("task_id", ASCENDING)])
        .limit(limit)
    )
    ended = [document async for document in cursor]
    if not ended:
        return []
    stored = {
        document["task_id"]: document
        async for document in results.find(
            {"task_id": {"$in": [document["task_id"] for document in ended]}}
        )
    }
    pairs: list[tuple[TaskRecord, ResultRecord | None]] = []
    for document in ended:
        embedded = document.pop("_result", None)
        result = stored.get(document["task_id"])
        if result is None and embedded is not None:
            result = await store_result(results, embedded)  # step 2 of a crashed save_result
        pairs.append((task_record(document), None if result is None else result_record(result)))
    return pairs


async def store_results(results: AsyncCollection[Document], documents: list[Document]) -> None:
    """Step 2 of several save_results, in one round trip; idempotent like store_result."""
    if not documents:
        return
    try:
        await results.insert_many(documents, ordered=False)
    except BulkWriteError as exc:
        # Only duplicate keys are expected: the result is stored already (a concurrent or
        # earlier step 2 of the same result).
        if any(error.get("code") != DUPLICATE_KEY for error in exc.details["writeErrors"]):
            raise
        if exc.details.get("writeConcernErrors"):
            raise


async def store_result(results: AsyncCollection[Document], document: Document) -> Document:
    """Step 2 of save_result: idempotent, whoever runs it and however often. An insert, not an
    upsert: the unique task_id refuses a second copy, and mongod need not look the task_id up
    first (an upsert is a query and then an insert)."""
    # DuplicateKeyError: the result is stored already, by this call's earlier try or another.
    with contextlib.suppress(DuplicateKeyError):
        await results.insert_one(document)
    return document


async def results_of_app(
    results: AsyncCollection[Document], drone_id: str, app_id: str, limit: int
) -> list[ResultRecord]:
    """TaskStore.results_for_drone for one application: results hold no app_id, so each is
    joined to its task (by the unique task_id index), newest first until `limit` are found."""
    pipeline: list[Document] = [
        {"$match": {"drone_id": drone_id}},
        {"$sort": {"timestamp": DESCENDING, "_id": DESCENDING}},
        {
            "$lookup": {
                "from": TASKS,
                "localField": "task_id",
                "foreignField": "task_id",
                "pipeline": [{"$project": {"_id": False, "app_id": True}}],
                "as": "_task",
            }
        },
        {"$match": {"_task.app_id": app_id}},
        {"$limit": limit},
        {"$project": {"_task": False}},
    ]
    cursor = await results.aggregate(pipeline)
    return [result_record(document) async for document in cursor]
