"""The result writer: drone events → store → the owning application's notification queue."""

import asyncio
import logging

from shared.announce import notify_result, notify_status, resend_final_states
from shared.broker import Broker, Delivery
from shared.errors import TaskAlreadyFinished, TaskError
from shared.health import until_done
from shared.ids import new_object_id
from shared.metrics import RESULTS_STORED, task_finished
from shared.models import ResultRecord, construct_trusted
from shared.protocol import DroneEvent
from shared.settings import Settings
from shared.store import TaskStore

log = logging.getLogger(__name__)

RECOVERY_BATCH = 100_000


class ResultWriter:
    def __init__(self, settings: Settings, broker: Broker, store: TaskStore) -> None:
        self.settings = settings
        self.broker = broker
        self.store = store
        self.queues = settings.queues

    async def on_event(self, delivery: Delivery) -> None:
        event = DroneEvent.decode(delivery.body)
        if event.result is not None:
            await self._on_result(event, delivery.redelivered)
        elif event.status is not None:
            await self._on_status(event)

    async def _on_result(self, event: DroneEvent, redelivered: bool) -> None:
        assert event.result is not None
        report = event.result
        record = construct_trusted(
            ResultRecord,
            {
                "result_id": new_object_id(),
                "task_id": report.task_id,
                "drone_id": event.drone_id,
                "result_data": report.result_data,
                "processing_time": report.processing_time,
                "success": report.success,
                "error_message": report.error_message,
                "timestamp": report.timestamp or event.received_at,
            },
        )
        try:
            outcome = await self.store.save_result(record)
        except TaskAlreadyFinished as finished:
            # A redelivered event may mean we stored it and died before notifying: notify again
            # unless the application already has it. Apps dedupe on task_id (at-least-once).
            task, stored = finished.task, finished.result
            if redelivered and task is not None and task.notified_at is None and stored is not None:
                await notify_result(self.broker, self.queues, task, stored)
            return
        RESULTS_STORED.labels(success=str(report.success).lower()).inc()
        task_finished(outcome.task)
        await notify_result(self.broker, self.queues, outcome.task, outcome.result)

    async def _on_status(self, event: DroneEvent) -> None:
        assert event.status is not None
        update = event.status
        try:
            outcome = await self.store.apply_status(update.task_id, event.drone_id, update.status)
        except TaskError:
            return  # refused (ended, unknown, another drone's): nothing for the app to hear
        await notify_status(self.broker, self.queues, outcome.task, update.additional_data)

    async def recover(self) -> int:
        """Re-send final states no application was sent: the broker lost them in a restart."""
        return await resend_final_states(self.broker, self.queues, self.store, RECOVERY_BATCH)

    async def run(self, stop: asyncio.Event) -> None:
        if not self.broker.durable:

            async def attempt() -> None:
                recovered = await self.recover()
                if recovered:
                    log.info("re-sent %d final states after a restart", recovered)

            # A store away at start-up (as `serve` starts, or cut just after) is waited out.
            retry_s = self.settings.sweep_interval_s
            if not await until_done(attempt, stop, retry_s, "re-sending final states"):
                return
        subscription = await self.broker.consume(
            self.queues.drone_events, self.on_event, prefetch=self.settings.consumer_prefetch
        )
        try:
            await stop.wait()
        finally:
            await subscription.cancel()
