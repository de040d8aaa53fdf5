"""The jobs the worker runs, one per store call, each a function of (connection, now, *args),
and the conversions of rows to records they share."""

import contextlib
import sqlite3
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Final

import orjson

from shared.clock import format_timestamp, parse_timestamp
from shared.errors import StoreError, TaskNotFound
from shared.models import ErrorCode, NewTask, ResultRecord, TaskRecord, construct_trusted
from shared.store import CancelOutcome, CreateOutcome, ResultOutcome, StatusOutcome
from shared.store.sqlite.schema import (
    _APPLY_PROCESSING,
    _CANCEL,
    _CLAIM,
    _DELETE_RESULT,
    _END_WITH_RESULT,
    _EXPIRE,
    _INSERT_RESULT_IF_LIVE,
    _INSERT_TASK,
    _MARK_DISPATCHED,
    _MARK_NOTIFIED,
    _RELEASE,
    _RELEASE_DRONE,
    _RESET_DISPATCH,
    _RESULT_FIELDS,
    _SELECT_BY_IDEMPOTENCY_KEY,
    _SELECT_RESULT,
    _SELECT_TASK,
    _TASK_FIELDS,
    RESULTS_FOR_DRONE_SQL,
    UNNOTIFIED_SQL,
)

CANCELLED_MESSAGE: Final = "cancelled by the application"
EXPIRED_MESSAGE: Final = "no drone took the task within its ttl_s"


# --- rows to records ------------------------------------------------------------------------


def _task(row: Sequence[Any]) -> TaskRecord:
    values = dict(zip(_TASK_FIELDS, row, strict=False))
    values["input_data"] = orjson.loads(values["input_data"])
    return construct_trusted(TaskRecord, values)


def _result(row: Sequence[Any]) -> ResultRecord:
    values = dict(zip(_RESULT_FIELDS, row, strict=False))
    values["result_data"] = orjson.loads(values["result_data"])
    values["success"] = bool(values["success"])
    return construct_trusted(ResultRecord, values)


# --- the jobs: each runs on the worker thread inside the batch's transaction -------------------


def _create_task(connection: sqlite3.Connection, now: str, new: NewTask) -> CreateOutcome:
    expires_at = None
    if new.ttl_s is not None:
        expires_at = format_timestamp(parse_timestamp(now) + timedelta(seconds=new.ttl_s))
    inserted = connection.execute(
        _INSERT_TASK,
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
            _SELECT_BY_IDEMPOTENCY_KEY, (new.app_id, new.idempotency_key)
        ).fetchone()
    if row is None:
        row = connection.execute(_SELECT_TASK, (new.task_id,)).fetchone()
    if row is None:
        raise StoreError(f"task {new.task_id} was neither inserted nor found")
    return CreateOutcome(_task(row), created=False)


def _get_task(connection: sqlite3.Connection, now: str, task_id: str) -> TaskRecord | None:
    row = connection.execute(_SELECT_TASK, (task_id,)).fetchone()
    return None if row is None else _task(row)


def _select_tasks(
    connection: sqlite3.Connection, now: str, sql: str, params: tuple[object, ...]
) -> list[TaskRecord]:
    return [_task(row) for row in connection.execute(sql, params)]


def _get_result(connection: sqlite3.Connection, now: str, task_id: str) -> ResultRecord | None:
    row = connection.execute(_SELECT_RESULT, (task_id,)).fetchone()
    return None if row is None else _result(row)


def _results_for_drone(
    connection: sqlite3.Connection, now: str, drone_id: str, limit: int
) -> list[ResultRecord]:
    return [_result(row) for row in connection.execute(RESULTS_FOR_DRONE_SQL, (drone_id, limit))]


def _one_task(cursor: sqlite3.Cursor) -> TaskRecord | None:
    # fetchall, not fetchone: it steps the UPDATE … RETURNING to its end, so the statement is
    # finished before COMMIT whatever happens to the cursor object.
    rows = cursor.fetchall()
    return _task(rows[0]) if rows else None


def _mark_dispatched(connection: sqlite3.Connection, now: str, task_id: str) -> TaskRecord | None:
    return _one_task(connection.execute(_MARK_DISPATCHED, (now, task_id)))


def _reset_dispatch(connection: sqlite3.Connection, now: str) -> int:
    return connection.execute(_RESET_DISPATCH).rowcount


def _claim(
    connection: sqlite3.Connection, now: str, task_id: str, drone_id: str
) -> TaskRecord | None:
    return _one_task(connection.execute(_CLAIM, (now, task_id, drone_id)))


def _release(
    connection: sqlite3.Connection,
    now: str,
    task_id: str,
    drone_id: str,
    reason: ErrorCode | None,
    attempt: int | None,
) -> TaskRecord | None:
    return _one_task(connection.execute(_RELEASE, (now, reason, task_id, drone_id, attempt)))


def _release_drone(connection: sqlite3.Connection, now: str, drone_id: str) -> list[TaskRecord]:
    return [_task(row) for row in connection.execute(_RELEASE_DRONE, (now, None, drone_id))]


def _expire(connection: sqlite3.Connection, now: str, cutoff: str, limit: int) -> list[TaskRecord]:
    rows = connection.execute(_EXPIRE, (now, EXPIRED_MESSAGE, cutoff, limit)).fetchall()
    return sorted(map(_task, rows), key=lambda task: (task.created_at, task.task_id))


def _apply_processing(
    connection: sqlite3.Connection, now: str, task_id: str, drone_id: str
) -> StatusOutcome:
    task = _one_task(connection.execute(_APPLY_PROCESSING, (now, task_id, drone_id)))
    if task is not None:
        return StatusOutcome("applied", task)
    task = _get_task(connection, now, task_id)
    if task is None:
        return StatusOutcome("not_found", None)
    if task.drone_id != drone_id:
        return StatusOutcome("not_yours", task)
    return StatusOutcome("ignored", task)


def _save_result(connection: sqlite3.Connection, now: str, result: ResultRecord) -> ResultOutcome:
    status, error_code, error_message = (
        ("completed", None, None)
        if result.success
        else ("failed", "drone_error", result.error_message)
    )
    # Result first, then the task's end: two statements where a savepoint around them took
    # four, in the hottest write. The batch holds the write lock, so nothing can end the task in
    # between; should ending it fail anyway, the result it would have orphaned goes again.
    inserted = connection.execute(
        _INSERT_RESULT_IF_LIVE,
        (
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
    if inserted:
        try:
            task = _one_task(
                connection.execute(
                    _END_WITH_RESULT, (now, status, error_code, error_message, result.task_id)
                )
            )
            if task is None:
                raise StoreError(f"task {result.task_id} was live, then not, in one transaction")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # gone if SQLite aborted the transaction
                connection.execute(_DELETE_RESULT, (result.task_id,))
            raise
        return ResultOutcome(task, result, stored=True)
    task = _get_task(connection, now, result.task_id)
    if task is None:
        raise TaskNotFound(result.task_id)
    return ResultOutcome(task, _get_result(connection, now, result.task_id), stored=False)


def _cancel(connection: sqlite3.Connection, now: str, task_id: str) -> CancelOutcome | None:
    # `delivery` is left as it was, so the returned row still says whether a drone held it.
    task = _one_task(connection.execute(_CANCEL, (now, CANCELLED_MESSAGE, task_id)))
    if task is not None:
        return CancelOutcome(task, cancelled=True, was_delivered=task.delivery == "delivered")
    task = _get_task(connection, now, task_id)
    if task is None:
        return None
    return CancelOutcome(task, cancelled=False, was_delivered=False)


def _mark_notified(connection: sqlite3.Connection, now: str, task_ids_json: str) -> None:
    connection.execute(_MARK_NOTIFIED, (now, task_ids_json))


def _unnotified(
    connection: sqlite3.Connection, now: str, limit: int
) -> list[tuple[TaskRecord, ResultRecord | None]]:
    width = len(_TASK_FIELDS)
    return [
        (_task(row[:width]), None if row[width] is None else _result(row[width:]))
        for row in connection.execute(UNNOTIFIED_SQL, (limit,))
    ]
