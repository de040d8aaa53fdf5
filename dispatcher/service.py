"""The dispatcher: intake queue → the drone's queue, plus the periodic sweep."""

import asyncio
import contextlib
import logging
from collections.abc import Callable

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
        # Messages the broker may have lost in its restart: after one while this process was
        # away (or in this process's own restart, for memory) `run` recovers before consuming;
        # after one while it was connected, `_on_connection` asks the run loop to.
        self.recovered = broker.durable and not self._replays_hops
        self._reconnected = False

    @property
    def _replays_hops(self) -> bool:
        """Whether task and notification messages are transient: the store replays them."""
        return not (self.queues.intake.persistent and self.queues.app("").persistent)

    def _on_connection(self, reason: str | None) -> None:
        if reason is None and self._replays_hops:
            self._reconnected = True

    @property
    def _stamps_routing(self) -> bool:
        """Whether routing is recorded in the store (dispatched_at): aging needs it to know how
        long a task has waited in its drone's queue. Without aging the hot path writes nothing:
        a stale message (task cancelled or already delivered) is dropped by the drone's claim,
        and the sweep finds lost intake messages by queue depths instead (`resend_unrouted`)."""
        return self.settings.aging_interval_s is not None

    async def on_intake(self, delivery: Delivery) -> None:
        if self._stamps_routing:
            await self._route(task_id_of_envelope(delivery.body))
            return
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
        if self.broker.durable or self._stamps_routing:
            acted += await self.resend_unrouted(grace_s=grace_s)
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

    async def resend_unrouted(self, *, grace_s: float) -> int:
        """Re-send tasks whose intake message never reached the broker (a gateway died between
        storing a task and publishing it), highest priority first. Returns how many it re-sent.
        A broker in this process loses messages only with the process, and `recover` re-routes
        every waiting task at start-up: `sweep` calls this for a durable broker, or with aging."""
        if await self.broker.queue_depth(self.queues.intake) > 0:
            return 0  # a backlog is not a lost message: wait until the intake is drained
        if not self._stamps_routing:
            # A message in a gateway's prefetch, its claim waiting on a slow store, is not in
            # its queue's depth: wait as long as for a lost notification before suspecting it.
            grace_s = max(grace_s, self.settings.renotify_after_s)
        waiting = await self.store.undispatched(iso_before(grace_s), SWEEP_BATCH)
        if not self._stamps_routing:
            # Routing was not recorded, so every task waiting past the grace is listed. One whose
            # drone's queue holds messages is taken as on its way; a task whose message is lost
            # behind them is found once that queue has drained. A copy sent for a task whose
            # message is in flight is harmless, if not free: a claim succeeds once.
            depth_by_drone: dict[str, int] = {}
            for drone_id in {task.drone_id for task in waiting}:
                queue = self.queues.drone(drone_id)
                depth_by_drone[drone_id] = await self.broker.queue_depth(queue)
            waiting = [task for task in waiting if depth_by_drone[task.drone_id] == 0]
        # After a broker outage this is the gateways' whole backlog: highest priority first.
        for task in sorted(waiting, key=lambda t: -t.priority):
            await enqueue(self.broker, self.queues, task)
            task_redelivered("unrouted")
        return len(waiting)

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

    async def recover_after_reconnect(self) -> None:
        """The broker may have restarted and lost every transient message: route each waiting
        task again and re-send every final state no application was sent. A reconnect without
        a restart costs copies only: a claim succeeds once, and an app may hear a state twice."""
        routed = await self.recover()
        sent = await resend_final_states(self.broker, self.queues, self.store, SWEEP_BATCH)
        log.info("after a reconnect: re-routed %d tasks, re-sent %d final states", routed, sent)

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
        listeners: list[Callable[[str | None], None]] | None = getattr(
            self.broker, "connection_listeners", None
        )
        if listeners is not None:
            listeners.append(self._on_connection)
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
                    if self._reconnected:
                        self._reconnected = False
                        try:
                            await self.recover_after_reconnect()
                        except TRANSIENT_ERRORS:
                            self._reconnected = True  # the next sweep tries again
                            raise
                    await self.sweep(grace_s=self.settings.dispatch_grace_s)
                except TRANSIENT_ERRORS as exc:
                    log.warning("sweep skipped: %s", exc)
        finally:
            await subscription.cancel()
            if listeners is not None:
                listeners.remove(self._on_connection)
