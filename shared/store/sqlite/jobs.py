"""The jobs the worker runs, one per store call, each a function of (connection, now, *args),
and the conversions of rows to records they share."""

import contextlib
import sqlite3
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, NoReturn

import orjson

from shared.clock import format_timestamp, parse_timestamp
from shared.errors import StoreError, TaskAlreadyFinished, TaskNotFound, TaskNotYours
from shared.lifecycle import (
    CANCELLED_MESSAGE,
    EXPIRED_MESSAGE,
    ErrorCode,
    max_attempts_message,
    result_ending,
)
from shared.models import NewTask, ResultRecord, TaskRecord, construct_trusted
from shared.store import CancelOutcome, CreateOutcome, ResultOutcome, StatusOutcome
from shared.store.sqlite.schema import (
    APP_RESULTS_FOR_DRONE_SQL,
    APPLY_PROCESSING_SQL,
    CANCEL_SQL,
    CLAIM_SQL,
    DELETE_RESULT_SQL,
    END_WITH_RESULT_SQL,
    EXPIRE_SQL,
    INSERT_RESULT_IF_LIVE_SQL,
    INSERT_TASK_SQL,
    MARK_DISPATCHED_SQL,
    MARK_NOTIFIED_SQL,
    RELEASE_SQL,
    RESET_DISPATCH_SQL,
    RESULT_FIELDS,
    RESULTS_FOR_DRONE_SQL,
    SELECT_BY_IDEMPOTENCY_KEY_SQL,
    SELECT_RESULT_SQL,
    SELECT_TASK_SQL,
    STAMP_DISPATCHED_SQL,
    TASK_FIELDS,
    UNNOTIFIED_SQL,
    numbered,
)

# --- rows to records ------------------------------------------------------------------------


def _to_task(row: Sequence[Any]) -> TaskRecord:
    values = dict(zip(TASK_FIELDS, row, strict=False))
    values["input_data"] = orjson.loads(values["input_data"])
    return construct_trusted(TaskRecord, values)


def _to_result(row: Sequence[Any]) -> ResultRecord:
    values = dict(zip(RESULT_FIELDS, row, strict=False))
    values["result_data"] = orjson.loads(values["result_data"])
    values["success"] = bool(values["success"])
    return construct_trusted(ResultRecord, values)


# --- the jobs: each runs on the worker thread inside the batch's transaction -------------------


def create_task(connection: sqlite3.Connection, now: str, new: NewTask) -> CreateOutcome:
    expires_at = None
    if new.ttl_s is not None:
        expires_at = format_timestamp(parse_timestamp(now) + timedelta(seconds=new.ttl_s))
    inserted = connection.execute(
        INSERT_TASK_SQL,
        (
            new.task_id,
            new.app_id,
            new.drone_id,
            new.task_type,
            orjson.dumps(new.input_data).decode(),
            new.priority,
            now,
            now,
            new.max_attempts,
            new.timeout_s,
            new.ttl_s,
            new.idempotency_key,
            expires_at,
        ),
    ).rowcount
    if inserted:
        values = {
            "task_id": new.task_id,
            "app_id": new.app_id,
            "drone_id": new.drone_id,
            "task_type": new.task_type,
            "input_data": new.input_data,
            "status": "pending",
            "priority": new.priority,
            "created_at": now,
            "updated_at": now,
            "attempts": 0,
            "max_attempts": new.max_attempts,
            "timeout_s": new.timeout_s,
            "ttl_s": new.ttl_s,
            "idempotency_key": new.idempotency_key,
            "delivered_at": None,
            "started_at": None,
            "finished_at": None,
            "error_code": None,
            "error_message": None,
            "delivery": "queued",
            "dispatched_at": None,
            "notified_at": None,
        }
        return CreateOutcome(construct_trusted(TaskRecord, values), created=True)
    # A unique index refused it: the idempotency key is taken, or the same task_id was retried.
    row = None
    if new.idempotency_key is not None:
        row = connection.execute(
            SELECT_BY_IDEMPOTENCY_KEY_SQL, (new.app_id, new.idempotency_key)
        ).fetchone()
    if row is None:
        row = connection.execute(SELECT_TASK_SQL, (new.task_id,)).fetchone()
    if row is None:
        raise StoreError(f"task {new.task_id} was neither inserted nor found")
    return CreateOutcome(_to_task(row), created=False)


def get_task(connection: sqlite3.Connection, now: str, task_id: str) -> TaskRecord | None:
    row = connection.execute(SELECT_TASK_SQL, (task_id,)).fetchone()
    return None if row is None else _to_task(row)


def select_tasks(
    connection: sqlite3.Connection, now: str, sql: str, params: tuple[object, ...]
) -> list[TaskRecord]:
    return [_to_task(row) for row in connection.execute(sql, params)]


def count(connection: sqlite3.Connection, now: str, sql: str, params: tuple[object, ...]) -> int:
    found: int = connection.execute(sql, params).fetchone()[0]
    return found


def get_result(connection: sqlite3.Connection, now: str, task_id: str) -> ResultRecord | None:
    row = connection.execute(SELECT_RESULT_SQL, (task_id,)).fetchone()
    return None if row is None else _to_result(row)


def results_for_drone(
    connection: sqlite3.Connection, now: str, drone_id: str, limit: int, app_id: str | None
) -> list[ResultRecord]:
    if app_id is not None:
        rows = connection.execute(APP_RESULTS_FOR_DRONE_SQL, (drone_id, app_id, limit))
    else:
        rows = connection.execute(RESULTS_FOR_DRONE_SQL, (drone_id, limit))
    return [_to_result(row) for row in rows]


def _one_task(cursor: sqlite3.Cursor) -> TaskRecord | None:
    # fetchall, not fetchone: it steps the UPDATE … RETURNING to its end, so the statement is
    # finished before COMMIT whatever happens to the cursor object.
    rows = cursor.fetchall()
    return _to_task(rows[0]) if rows else None


def mark_dispatched(connection: sqlite3.Connection, now: str, task_id: str) -> TaskRecord | None:
    return _one_task(connection.execute(MARK_DISPATCHED_SQL, (now, task_id)))


def stamp_dispatched(connection: sqlite3.Connection, now: str, task_ids_json: str) -> None:
    connection.execute(STAMP_DISPATCHED_SQL, (now, task_ids_json))


def reset_dispatch(connection: sqlite3.Connection, now: str) -> int:
    return connection.execute(RESET_DISPATCH_SQL).rowcount


def claim(
    connection: sqlite3.Connection, now: str, task_id: str, drone_id: str
) -> TaskRecord | None:
    return _one_task(connection.execute(CLAIM_SQL, numbered(now, task_id, drone_id)))


def release(
    connection: sqlite3.Connection,
    now: str,
    task_id: str,
    drone_id: str,
    reason: ErrorCode | None,
    attempt: int | None,
) -> TaskRecord | None:
    head, tail = max_attempts_message(reason)
    return _one_task(
        connection.execute(RELEASE_SQL, numbered(now, head, tail, task_id, drone_id, attempt))
    )


def expire(connection: sqlite3.Connection, now: str, cutoff: str, limit: int) -> list[TaskRecord]:
    rows = connection.execute(EXPIRE_SQL, numbered(now, EXPIRED_MESSAGE, cutoff, limit)).fetchall()
    return sorted(map(_to_task, rows), key=lambda task: (task.created_at, task.task_id))


def apply_processing(
    connection: sqlite3.Connection, now: str, task_id: str, drone_id: str
) -> StatusOutcome:
    task = _one_task(connection.execute(APPLY_PROCESSING_SQL, numbered(now, task_id, drone_id)))
    if task is not None:
        return StatusOutcome(task)
    task = get_task(connection, now, task_id)
    if task is None:
        raise TaskNotFound(task_id)
    if task.drone_id != drone_id:
        raise TaskNotYours(task_id, task=task)
    raise TaskAlreadyFinished(task_id, task=task)


def save_result(connection: sqlite3.Connection, now: str, result: ResultRecord) -> ResultOutcome:
    status, error_code, error_message = result_ending(result.success, result.error_message)
    # Result first, then the task's end: two statements where a savepoint around them took
    # four, in the hottest write. The batch holds the write lock, so nothing can end the task in
    # between; should ending it fail anyway, the result it would have orphaned goes again.
    inserted = connection.execute(
        INSERT_RESULT_IF_LIVE_SQL,
        numbered(
            result.result_id,
            result.task_id,
            result.drone_id,
            orjson.dumps(result.result_data).decode(),
            result.processing_time,
            result.success,
            result.error_message,
            result.timestamp,
        ),
    ).rowcount
    if not inserted:
        _refuse_result(connection, now, result.task_id)
    try:
        task = _one_task(
            connection.execute(
                END_WITH_RESULT_SQL,
                numbered(now, status, error_code, error_message, result.task_id),
            )
        )
        if task is None:
            raise StoreError(f"task {result.task_id} was live, then not, in one transaction")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):  # gone if SQLite aborted the transaction
            connection.execute(DELETE_RESULT_SQL, (result.task_id,))
        raise
    return ResultOutcome(task, result)


def _refuse_result(connection: sqlite3.Connection, now: str, task_id: str) -> NoReturn:
    task = get_task(connection, now, task_id)
    if task is None:
        raise TaskNotFound(task_id)
    stored = get_result(connection, now, task_id)
    raise TaskAlreadyFinished(task_id, task=task, result=stored)


def cancel(connection: sqlite3.Connection, now: str, task_id: str) -> CancelOutcome:
    # `delivery` is left as it was, so the returned row still says whether a drone held it.
    task = _one_task(connection.execute(CANCEL_SQL, numbered(now, CANCELLED_MESSAGE, task_id)))
    if task is not None:
        return CancelOutcome(task, was_delivered=task.delivery == "delivered")
    task = get_task(connection, now, task_id)
    if task is None:
        raise TaskNotFound(task_id)
    raise TaskAlreadyFinished(task_id, task=task)


def mark_notified(connection: sqlite3.Connection, now: str, task_ids_json: str) -> None:
    connection.execute(MARK_NOTIFIED_SQL, (now, task_ids_json))


def unnotified(
    connection: sqlite3.Connection, now: str, limit: int
) -> list[tuple[TaskRecord, ResultRecord | None]]:
    width = len(TASK_FIELDS)
    return [
        (_to_task(row[:width]), None if row[width] is None else _to_result(row[width:]))
        for row in connection.execute(UNNOTIFIED_SQL, (limit,))
    ]
