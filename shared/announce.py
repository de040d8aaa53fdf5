"""What every service does after a store transition: tell the owning application, or put the
task back on its way to a drone. The store is always written first (read-your-writes)."""

from typing import Literal

from pydantic import JsonValue

from shared.broker import Broker
from shared.clock import now_iso
from shared.models import ResultRecord, TaskRecord
from shared.protocol import (
    Queues,
    encode_task_envelope,
    result_received_frame,
    status_update_frame,
)


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
    frame = status_update_frame(task, now_iso(), additional_data)
    await broker.publish(queues.app(task.app_id), frame)


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
