"""What every service does after a store transition: tell the owning application, or put the
task back on its way to a drone. The store is always written first (read-your-writes), so a
notification lost on the way is found there again: see `resend_final_states`."""

from typing import Literal

from pydantic import JsonValue

from shared.broker import Broker
from shared.broker.queues import Queues
from shared.models import ResultRecord, TaskRecord
from shared.protocol import encode_task_envelope, result_received_frame, status_update_frame
from shared.store import TaskStore


async def enqueue(broker: Broker, queues: Queues, task: TaskRecord) -> None:
    """Send a queued task to the dispatcher, which routes it to its drone's queue."""
    await broker.publish(
        queues.intake,
        encode_task_envelope(task.task_id, task.drone_id, task.priority),
        priority=task.priority,
    )


async def notify_status(
    broker: Broker,
    queues: Queues,
    task: TaskRecord,
    additional_data: dict[str, JsonValue] | None = None,
) -> None:
    await broker.publish(queues.app(task.app_id), status_update_frame(task, additional_data))


async def notify_result(
    broker: Broker, queues: Queues, task: TaskRecord, result: ResultRecord
) -> None:
    await broker.publish(queues.app(task.app_id), result_received_frame(result, task.app_id))


ReleaseReason = Literal["disconnect", "timeout"]


async def after_release(
    broker: Broker, queues: Queues, task: TaskRecord, reason: ReleaseReason
) -> None:
    """A released task is either queued again or, out of attempts, failed. Either way its
    application hears of it; a requeue keeps the status, so the update says why."""
    if task.is_terminal:
        await notify_status(broker, queues, task, {"reason": reason})
        return
    await enqueue(broker, queues, task)
    await notify_status(
        broker, queues, task, {"requeued": True, "reason": reason, "attempts": task.attempts}
    )


async def resend_final_states(
    broker: Broker,
    queues: Queues,
    store: TaskStore,
    limit: int,
    *,
    finished_before: str | None = None,
) -> int:
    """Re-send final states the store holds as sent to no application. Returns how many.

    Without `finished_before`, all of them: the broker lost its queues in a restart. With it, a
    running system's check for publishes that failed after the store write: only a state final
    since before then (a newer one may still be on its way) whose application's queue is empty
    (one in a full queue waits for its offline application)."""
    depth_by_app: dict[str, int] = {}
    sent = 0
    for task, result in await store.unnotified(limit):
        if finished_before is not None:
            if task.finished_at is None or task.finished_at > finished_before:
                continue
            if task.app_id not in depth_by_app:
                # Measured before re-sending any of its states, so that they all go together.
                depth_by_app[task.app_id] = await broker.queue_depth(queues.app(task.app_id))
            if depth_by_app[task.app_id] > 0:
                continue
        if result is not None:
            await notify_result(broker, queues, task, result)
        else:
            await notify_status(broker, queues, task)
        sent += 1
    return sent
