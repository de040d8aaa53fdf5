"""The dispatcher: intake queue → the drone's queue, plus the periodic sweep."""

import asyncio
import contextlib
import logging

from shared.announce import after_release, enqueue, notify_status, resend_final_states
from shared.broker import Broker, Delivery
from shared.clock import iso_after, iso_before, now_iso, parse_timestamp
from shared.errors import TRANSIENT_ERRORS
from shared.metrics import TASKS_RELEASED, TASKS_ROUTED, task_finished, task_redelivered
from shared.models import MAX_PRIORITY, TaskRecord
from shared.protocol import (
    ControlMessage,
    decode_task_envelope,
    encode_task_envelope,
    task_id_of_envelope,
)
from shared.settings import Settings
from shared.store import TaskStore

log = logging.getLogger(__name__)

SWEEP_BATCH = 500


def effective_priority(
    task: TaskRecord, aging_interval_s: float | None, at: str | None = None
) -> int:
    """With aging on, a task gains one priority level per aging interval it has waited by `at`
    (now if not given)."""
    if aging_interval_s is None:
        return task.priority
    waited_s = (parse_timestamp(at or now_iso()) - parse_timestamp(task.created_at)).total_seconds()
    return min(MAX_PRIORITY, task.priority + int(waited_s // aging_interval_s))


class Dispatcher:
    def __init__(self, settings: Settings, broker: Broker, store: TaskStore) -> None:
        self.settings = settings
        self.broker = broker
        self.store = store
        self.queues = settings.queues
        self.recovered = broker.durable

    @property
    def _tracks_routing(self) -> bool:
        """Whether routing is recorded in the store (dispatched_at). A durable broker needs it:
        the sweep re-sends tasks whose intake message never reached it (a gateway died between
        storing a task and publishing it). A broker in this process loses messages only with
        the process, and `run` re-routes every waiting task at start-up, so embedded mode skips
        that store write on the hot path. Aging needs it to know how long a task has waited."""
        return self.broker.durable or self.settings.aging_interval_s is not None

    async def on_intake(self, delivery: Delivery) -> None:
        if self._tracks_routing:
            await self._route(task_id_of_envelope(delivery.body))
            return
        # A stale message (task cancelled or already delivered) is dropped by the drone's claim.
        _, drone_id, priority = decode_task_envelope(delivery.body)
        await self.broker.publish(self.queues.drone(drone_id), delivery.body, priority=priority)
        TASKS_ROUTED.inc()

    async def _route(self, task_id: str) -> None:
        task = await self.store.mark_dispatched(task_id)
        if task is None:
            return  # finished, cancelled or already with a drone: the message is stale
        await self.broker.publish(
            self.queues.drone(task.drone_id),
            encode_task_envelope(task.task_id, task.drone_id, task.priority),
            priority=effective_priority(task, self.settings.aging_interval_s),
        )
        TASKS_ROUTED.inc()

    async def age(self) -> int:
        """Re-route tasks waiting in drone queues at their risen priority. The copy already in
        the queue is dropped when a drone claims either one: a claim succeeds only once."""
        interval = self.settings.aging_interval_s
        if interval is None:
            return 0
        rerouted = 0
        for task in await self.store.routed_before(iso_before(interval), SWEEP_BATCH):
            assert task.dispatched_at is not None
            if effective_priority(task, interval, at=task.dispatched_at) < MAX_PRIORITY:
                await self._route(task.task_id)
                rerouted += 1
        return rerouted

    async def sweep(self, *, grace_s: float) -> int:
        """One pass over the store. Returns how many tasks it acted on."""
        acted = 0
        now = now_iso()
        if self._tracks_routing and await self.broker.queue_depth(self.queues.intake) == 0:
            # Only when the intake is drained: a backlog is not a lost message.
            # After a broker outage this is the gateways' whole backlog: highest priority first.
            waiting = await self.store.undispatched(iso_before(grace_s), SWEEP_BATCH)
            for task in sorted(waiting, key=lambda t: -t.priority):
                await enqueue(self.broker, self.queues, task)
                task_redelivered("unrouted")
                acted += 1
        acted += await self.age()
        acted += await self.renotify()
        for task in await self.store.expire(now, SWEEP_BATCH):
            task_finished(task)
            await notify_status(self.broker, self.queues, task)
            acted += 1
        for task in await self.store.overdue(now, SWEEP_BATCH):
            released = await self.store.release(
                task.task_id, task.drone_id, reason="timeout", attempt=task.attempts
            )
            if released is None:
                continue
            TASKS_RELEASED.labels(reason="timeout").inc()
            if released.is_terminal:
                task_finished(released)
            else:
                task_redelivered("timeout")
            control = ControlMessage(kind="timeout", task_id=task.task_id, drone_id=task.drone_id)
            await self.broker.broadcast(self.queues.control, control.encode())
            await after_release(self.broker, self.queues, released, "timeout")
            acted += 1
        return acted

    async def renotify(self) -> int:
        """Re-send final states whose notification was lost: a publish that failed after the
        store write (the broker was down while a task was cancelled or failed in a sweep)."""
        sent = await resend_final_states(
            self.broker,
            self.queues,
            self.store,
            SWEEP_BATCH,
            finished_before=iso_before(self.settings.renotify_after_s),
        )
        if sent:
            log.info("re-sent %d final states that no application was sent", sent)
        return sent

    async def recover(self) -> int:
        """The broker lost its queues with the last process: route every waiting task again."""
        await self.store.reset_dispatch()
        routed = 0
        # Routing stamps dispatched_at, so each page leaves the next call's result.
        while waiting := await self.store.undispatched(iso_after(1), SWEEP_BATCH):
            for task in waiting:
                await self._route(task.task_id)
            routed += len(waiting)
        return routed

    async def recover_until_done(self, stop: asyncio.Event) -> bool:
        """Recover, trying again every sweep interval while the store is unavailable: a store
        that blips as `serve` starts must not end the dispatcher. False when stopped first.
        `serve` awaits it before it listens: a drone served while its waiting tasks were still
        being re-routed would get them in the order they were routed, not by priority."""
        while not stop.is_set():
            try:
                routed = await self.recover()
                if routed:
                    log.info("re-routed %d waiting tasks after a restart", routed)
                await self.sweep(grace_s=0)
                self.recovered = True
                return True
            except TRANSIENT_ERRORS as exc:
                log.warning("recovery after a restart deferred: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.sweep_interval_s)
        return False

    async def run(self, stop: asyncio.Event) -> None:
        if not self.recovered and not await self.recover_until_done(stop):
            return
        subscription = await self.broker.consume(
            self.queues.intake, self.on_intake, prefetch=self.settings.consumer_prefetch
        )
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.sweep_interval_s)
                if stop.is_set():
                    break
                try:
                    await self.sweep(grace_s=self.settings.dispatch_grace_s)
                except TRANSIENT_ERRORS as exc:
                    log.warning("sweep skipped: %s", exc)
        finally:
            await subscription.cancel()
