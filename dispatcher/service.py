"""The dispatcher: intake queue → the drone's queue, plus the periodic sweep."""

import asyncio
import contextlib
import logging

from shared.announce import after_release, enqueue, notify_status, resend_final_states
from shared.broker import Broker, Delivery, connection_listeners
from shared.clock import iso_after, iso_before, now_iso, parse_timestamp
from shared.errors import TRANSIENT_ERRORS
from shared.health import until_done
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
from shared.write_behind import WriteBehind

log = logging.getLogger(__name__)

SWEEP_BATCH = 500
STAMP_DELAY_S = 0.5


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
        self.replays = 0
        """How many times the transient hops were replayed because the broker lost them."""
        self.broker_checked = asyncio.Event()
        """Set each time `run` has asked the broker whether it lost them (tests wait on it)."""
        self._reconnected = asyncio.Event()
        self._store_incarnation: str | None = None
        self.store_replays = 0
        """How many times waiting tasks were routed again because the store restarted."""
        # Written a while after the route: a task its drone claimed meanwhile needs no stamp
        # (the claim leaves it unmatched), so a store writes one only for tasks left waiting.
        # Well within the grace period, after which another dispatcher's sweep would take a
        # task routed here and not yet stamped for lost, and route it again.
        self._stamps = WriteBehind(
            store.stamp_dispatched,
            "routing stamps",
            delay_s=min(STAMP_DELAY_S, settings.dispatch_grace_s / 4),
        )

    @property
    def _replays_hops(self) -> bool:
        """Whether the broker may lose task and notification messages while this process lives:
        a durable broker keeps transient ones in memory only, and loses them in its restart. A
        broker in this process loses them only with it, and `recover` replays them at start-up."""
        queues = self.queues
        transient = not (
            queues.intake.persistent and queues.drone("").persistent and queues.app("").persistent
        )
        return self.broker.durable and transient

    def _on_connection(self, lost_because: str | None) -> None:
        if lost_because is None:
            self._reconnected.set()  # the node may be a fresh one: check it now, not next sweep

    @property
    def _tracks_routing(self) -> bool:
        """Whether routing is recorded in the store (dispatched_at). A durable broker needs it:
        the sweep re-sends tasks whose intake message never reached it (a gateway died between
        storing a task and publishing it). A broker in this process loses messages only with
        the process, and `run` re-routes every waiting task at start-up, so embedded mode skips
        that store write on the hot path. Aging needs it to know how long a task has waited."""
        return self.broker.durable or self.settings.aging_interval_s is not None

    async def on_intake(self, delivery: Delivery) -> None:
        if self.settings.aging_interval_s is not None:
            # The priority it goes with depends on how long it has waited: read the task.
            await self._route(task_id_of_envelope(delivery.body))
            return
        # Routed from the message alone: a stale one (the task cancelled or already delivered)
        # is dropped by the drone's claim.
        task_id, drone_id, priority = decode_task_envelope(delivery.body)
        await self.broker.publish(self.queues.drone(drone_id), delivery.body, priority=priority)
        if self._tracks_routing:
            # After the publish and behind it, so that no store round trip is on the task's
            # path. Lost (the store away, this process killed), the stamp costs a repeat: past
            # the grace period the sweep routes the task again, and one of the two is claimed.
            self._stamps.add(task_id)
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
        acted = await self.replay_if_store_restarted()
        now = now_iso()
        await self._stamps.flush()  # else a task just routed would look unrouted
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
        """The broker lost its task messages (with the last process, or in its own restart):
        route every waiting task again."""
        await self.store.reset_dispatch()
        routed = 0
        # Routing stamps dispatched_at, so each page leaves the next call's result.
        while waiting := await self.store.undispatched(iso_after(1), SWEEP_BATCH):
            # A page at once: the store joins the stamps into few writes and the publishes
            # share their confirms. One by one, a replay of 335 tasks on shared SQLite held
            # the write lock for 7 s while the claims and results of running tasks waited.
            await asyncio.gather(*(self._route(task.task_id) for task in waiting))
            routed += len(waiting)
        return routed

    async def replay_if_lost(self) -> bool:
        """If the broker lost its transient messages (the restart marker is gone with them), route
        every waiting task again and re-send every final state no application was sent; then
        put the marker back. True if it replayed.

        Replaying before marking: a dispatcher that dies halfway leaves the marker missing, and
        the next check replays again. Several dispatchers may all replay after one restart;
        the copies cost work only (a claim succeeds once; apps dedupe final states on task_id).
        A reconnect to a node that did not restart finds the marker, and replays nothing."""
        marker = self.queues.restart_marker
        if await self.broker.queue_depth(marker) > 0:
            return False
        routed = await self.recover()
        sent = await resend_final_states(self.broker, self.queues, self.store, SWEEP_BATCH)
        await self.broker.publish(marker, b"")
        self.replays += 1
        log.warning(
            "RabbitMQ lost its transient messages (restarted, or %s was deleted): re-routed %d "
            "waiting tasks, re-sent %d final states",
            marker.name,
            routed,
            sent,
        )
        return True

    async def replay_if_store_restarted(self) -> int:
        """If the store is in a new life since the last look (`TaskStore.incarnation`: MongoDB's
        primary restarted or changed), route every waiting task again. Returns how many.

        Writes made without the journal may be gone with the old life, each in a way a sweep
        repairs but one: a task whose routing stamp was kept and whose claim was lost is queued
        and looks routed while no queue holds it, so no sweep sends it again and its drone,
        if it never answers the copy it got, never ends it. A stamp written behind the route
        lands after the claim, so that needs no crash within the journal's window: the old
        life's claim gone and the stamp written in the new one will do. The stamps waiting
        here are dropped, and the one being written awaited, before the replay: one written
        between its reset of the stamps and its reading of the waiting tasks would hide its
        task from it. The replay stamps anew. The copies it sends of tasks still in their
        queues cost work only: a claim succeeds once."""
        incarnation = await self.store.incarnation()
        if incarnation is None or incarnation == self._store_incarnation:
            return 0
        routed_in: str | None
        if self._store_incarnation is not None:
            # This process routed in the life before: its own stamps may be stale, whether or
            # not another dispatcher has replayed already.
            routed_in = self._store_incarnation
        else:
            # The store says which life was routed last, so a dispatcher that started after
            # the restart (it may have died with mongod) still sees it.
            routed_in = await self.store.routed_incarnation()
        routed = 0
        if routed_in not in (None, incarnation):
            await self._stamps.discard()
            routed = await self.recover()
            self.store_replays += 1
            log.warning(
                "the store restarted (or its primary changed), and may have lost writes made "
                "without its journal: re-routed %d waiting tasks",
                routed,
            )
        if routed_in != incarnation:
            await self.store.record_routed_incarnation(incarnation)
        # Only now: a replay that failed is tried again at the next sweep.
        self._store_incarnation = incarnation
        return routed

    async def recover_until_done(self, stop: asyncio.Event) -> bool:
        """Recover, trying again every sweep interval while the store is unavailable: a store
        that blips as `serve` starts must not end the dispatcher. False when stopped first.
        `serve` awaits it before it listens: a drone served while its waiting tasks were still
        being re-routed would get them in the order they were routed, not by priority."""

        async def attempt() -> None:
            routed = await self.recover()
            if routed:
                log.info("re-routed %d waiting tasks after a restart", routed)
            await self.sweep(grace_s=0)
            self.recovered = True

        retry_s = self.settings.sweep_interval_s
        return await until_done(attempt, stop, retry_s, "recovery after a restart")

    async def run(self, stop: asyncio.Event) -> None:
        if not self.recovered and not await self.recover_until_done(stop):
            return
        replays = self._replays_hops
        # Told when the connection comes back (RabbitMQBroker; through the health wrapper too).
        listeners = connection_listeners(self.broker)
        if replays and listeners is not None:
            listeners.append(self._on_connection)
        with contextlib.suppress(*TRANSIENT_ERRORS):
            # Before any route of this process: the life its stamps are written in. If the
            # store is away, the first sweep that reaches it takes the sample.
            await self.replay_if_store_restarted()
        subscription = await self.broker.consume(
            self.queues.intake, self.on_intake, prefetch=self.settings.consumer_prefetch
        )
        try:
            if replays:
                # At start-up: the node may have restarted while no dispatcher was running.
                await self._check_broker()
            while not stop.is_set():
                await self._sleep(stop)
                if stop.is_set():
                    break
                if replays:
                    # After a reconnect, and at every sweep: cheap (one declare), and it also
                    # finds a restart whose reconnect this process did not see.
                    await self._check_broker()
                try:
                    await self.sweep(grace_s=self.settings.dispatch_grace_s)
                except TRANSIENT_ERRORS as exc:
                    log.warning("sweep skipped: %s", exc)
        finally:
            await subscription.cancel()
            await self._stamps.flush()
            if replays and listeners is not None:
                listeners.remove(self._on_connection)

    async def _sleep(self, stop: asyncio.Event) -> None:
        """Until the next sweep, a reconnect, or `stop`."""
        waits = [
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self._reconnected.wait()),
        ]
        try:
            await asyncio.wait(
                waits, timeout=self.settings.sweep_interval_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiting in waits:
                waiting.cancel()
        self._reconnected.clear()

    async def _check_broker(self) -> None:
        try:
            await self.replay_if_lost()
        except TRANSIENT_ERRORS as exc:
            log.warning("check for a RabbitMQ restart deferred: %s", exc)  # the next sweep's
            return
        self.broker_checked.set()
