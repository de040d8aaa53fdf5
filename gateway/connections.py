"""Live WebSocket sessions held by this gateway.

A drone session consumes its drone's priority queue only while it has a free capacity slot:
the store records what the drone holds, so no broker delivery stays unacked while a drone
works (RabbitMQ's consumer_timeout would otherwise close the channel on long tasks).
"""

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Protocol

import orjson
from starlette.websockets import WebSocketDisconnect

from shared.broker import Broker, Delivery, Subscription
from shared.broker.queues import Queues
from shared.clock import now_iso, parse_timestamp
from shared.errors import TRANSIENT_ERRORS
from shared.lifecycle import TERMINAL_STATUSES
from shared.metrics import (
    APPS_CONNECTED,
    DRONES_CONNECTED,
    NOTIFICATIONS_SENT,
    task_delivered,
    task_redelivered,
)
from shared.models import TaskRecord
from shared.protocol import (
    CLOSE_SUPERSEDED,
    PROCESSING_RESULT_RECEIVED,
    TASK_STATUS_UPDATE,
    ControlMessage,
    drone_task_frame,
    task_cancelled_frame,
    task_id_of_envelope,
)
from shared.store import TaskStore
from shared.write_behind import WriteBehind

log = logging.getLogger(__name__)

RESUME_RETRY_S = 1.0
RECONCILE_SLICE = 1000  # drone sessions checked between two yields to the event loop


class ClientSocket(Protocol):
    """What a session needs of its WebSocket (Starlette's fits), so tests can pass a fake."""

    async def send_text(self, data: str) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


class DroneSession:
    # Slots, and no Event or set until needed: one session per connected drone, held for
    # hours (bench/connections.py measures 18,000 of them).
    __slots__ = (
        "_adoptable",
        "_broker",
        "_claiming",
        "_claims_done",
        "_flow",
        "_queues",
        "_resume_retry",
        "_store",
        "_subscription",
        "capacity",
        "closed",
        "drone_id",
        "held",
        "unsure_claims",
        "websocket",
    )

    def __init__(
        self,
        drone_id: str,
        websocket: ClientSocket,
        capacity: int,
        broker: Broker,
        store: TaskStore,
        queues: Queues,
    ) -> None:
        self.drone_id = drone_id
        self.websocket = websocket
        self.capacity = capacity
        self.held: dict[str, TaskRecord] = {}
        self._broker = broker
        self._store = store
        self._queues = queues
        self._subscription: Subscription | None = None
        self._flow = asyncio.Lock()
        self._resume_retry: asyncio.Task[None] | None = None
        self._claiming = 0  # deliveries being claimed; each holds a slot like a held task
        self.unsure_claims: dict[str, str] = {}  # task id → when its claim failed
        self._claims_done: asyncio.Future[None] | None = None  # while _claiming > 0
        self._adoptable: set[str] = set()  # passed on by an older session; waiting for a slot
        self.closed = False

    async def start(self) -> None:
        """Send the drone again what the store says it holds (an earlier session of it dropped,
        here or on a gateway that died), up to its capacity, then consume for any slot left.

        The store can say the drone holds more than its capacity: a slot is freed once the
        drone's result is handed to the broker, before the result writer stores it. So what
        does not fit waits in `_adoptable`, and is re-checked against the store as slots free:
        a task whose result landed meanwhile is not sent again."""
        for task in await self._store.held_by(self.drone_id):
            if self._free_slots() > 0:
                await self._resend(task)
            else:
                self._adoptable.add(task.task_id)
        await self._resume_if_free()

    async def adopt(self, task_id: str) -> bool:
        """An older session of this drone closed holding `task_id`, or this one started with
        more held than it has slots: send it here if the store still says the drone holds it.
        It waits for a free slot, so the drone gets no more than its capacity. False when the
        store could not be read: the task waits, and a retry is scheduled."""
        if self.closed or task_id in self.held:
            return True
        if self._free_slots() <= 0:
            self._adoptable.add(task_id)
            return True
        try:
            task = await self._store.get_task(task_id)
        except TRANSIENT_ERRORS as exc:
            # Not dropped: a task left waiting here would stay delivered to a connected drone
            # that never gets it, until its in-progress timeout.
            log.warning(
                "could not resume %s for drone %s yet: %s",
                task_id,
                self.drone_id,
                exc,
                extra={"task_id": task_id, "drone_id": self.drone_id},
            )
            self._adoptable.add(task_id)
            self._retry_resume_later()
            return False
        if task is None or task.is_terminal or task.delivery != "delivered":
            return True  # ended, or timed out and queued again, meanwhile
        if task.drone_id != self.drone_id:
            return True
        # Checked again after the read: adopts run concurrently (several results free slots at
        # once, hints arrive meanwhile), and each saw a free slot before awaiting the store.
        # _resend takes the slot with no await in between.
        if self._free_slots() <= 0:
            self._adoptable.add(task_id)
            return True
        await self._resend(task)
        return True

    async def finished(self, task_id: str) -> None:
        """The drone reported a result, or the task was cancelled or timed out: free its slot."""
        self.held.pop(task_id, None)
        await self._fill_free_slots()

    async def _fill_free_slots(self) -> None:
        """Tasks the drone already holds first (waiting adoptions), then new ones."""
        while self._adoptable and self._free_slots() > 0:
            if not await self.adopt(self._adoptable.pop()):
                return  # the store is away: _resume_after_pause tries again
        await self._resume_if_free()

    async def drop(self, task_id: str, reason: str) -> None:
        if task_id in self.held:
            await self._send(task_cancelled_frame(task_id, reason).decode())
            await self.finished(task_id)

    async def close(self) -> None:
        """The socket is gone: stop consuming. What the drone holds stays delivered to it (a
        link flap costs no attempt): its next session sends it again, and other gateways are
        told, in case the drone is already back on one of them."""
        self.closed = True
        if self._resume_retry is not None:
            self._resume_retry.cancel()
        async with self._flow:
            await self._pause()
        # A claim in flight lands in `held` before it ends, so it is passed on below, and a
        # newer session on this gateway (started after this returns) finds it in the store.
        if self._claims_done is not None:
            # Shielded: this close being cancelled must not cancel what the claims resolve.
            await asyncio.shield(self._claims_done)
        held = [*self.held, *self._adoptable]
        self.held, self._adoptable = {}, set()
        for task_id in held:
            control = ControlMessage(kind="resume", task_id=task_id, drone_id=self.drone_id)
            try:
                await self._broker.broadcast(self._queues.control, control.encode())
            except TRANSIENT_ERRORS as exc:
                # The drone's next connection finds them in the store; the rest would fail alike.
                log.warning(
                    "could not pass on %s of drone %s: %s",
                    task_id,
                    self.drone_id,
                    exc,
                    extra={"task_id": task_id, "drone_id": self.drone_id},
                )
                return

    def _free_slots(self) -> int:
        return self.capacity - len(self.held) - self._claiming

    async def _on_task(self, delivery: Delivery) -> None:
        if self.closed or self._free_slots() <= 0:
            # An ack let one more through before our pause reached the broker: back to its place.
            await delivery.reject(requeue=True)
            return
        self._claiming += 1
        if self._claims_done is None:
            self._claims_done = asyncio.get_running_loop().create_future()
        # The last free slot is taken: stop deliveries while claiming, not after, so that the
        # claim does not wait for the broker's reply.
        pausing = asyncio.create_task(self._pause_flow()) if self._free_slots() == 0 else None
        task: TaskRecord | None = None
        task_id = task_id_of_envelope(delivery.body)
        try:
            task = await self._store.claim(task_id, self.drone_id)
            if task is not None:
                self.held[task.task_id] = task  # before the claim's slot is given up
        except TRANSIENT_ERRORS:
            # The store may have written the claim and failed before answering (MongoDB killed
            # mid-write): checked once it answers again, in settle_unsure_claims.
            self.unsure_claims[task_id] = now_iso()
            raise
        finally:
            self._claiming -= 1
            if self._claiming == 0 and self._claims_done is not None:
                self._claims_done.set_result(None)
                self._claims_done = None
            if pausing is not None:
                await pausing
            if task is None:
                # Cancelled, finished, expired, a duplicate message, or the store failed (the
                # message is requeued): the slot it took is free again.
                await self._resume_if_free()
        # Closed meanwhile, or the send fails: the task stays held, and close() passes it on.
        frame = None if task is None or self.closed else drone_task_frame(task, now_iso())
        if task is not None and frame is not None and await self._send(frame.decode()):
            task_delivered(task)

    async def settle_unsure_claims(self) -> None:
        """A claim written without its answer reaching us (MongoDB killed mid-write) leaves a
        task delivered to this drone that the drone never got: the store says the drone holds
        it, so send it now. One delivered after the failed claim is another session's."""
        for task_id, failed_at in list(self.unsure_claims.items()):
            if self.closed:
                return
            try:
                current = await self._store.get_task(task_id)
            except TRANSIENT_ERRORS:
                return  # still away: next time
            del self.unsure_claims[task_id]
            if (
                current is not None
                and current.drone_id == self.drone_id
                and current.delivered_at is not None
                and current.delivered_at <= failed_at
            ):
                log.info(
                    "sending %s: its claim was stored though it failed",
                    task_id,
                    extra={"task_id": task_id, "drone_id": self.drone_id},
                )
                await self.adopt(task_id)

    async def _resend(self, task: TaskRecord) -> None:
        if self.closed or task.task_id in self.held:
            return
        self.held[task.task_id] = task
        await self._send(drone_task_frame(task, now_iso(), resumed=True).decode())
        task_redelivered("reconnect")

    async def _send(self, text: str) -> bool:
        try:
            await self.websocket.send_text(text)
        except Exception:  # the socket died under us; its receive loop closes the session
            return False
        return True

    async def _pause(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            await subscription.cancel()

    async def _pause_flow(self) -> None:
        async with self._flow:
            await self._pause()

    async def _resume_if_free(self) -> None:
        async with self._flow:
            free = self._free_slots()
            if self.closed or self._subscription is not None or free <= 0:
                return
            # Priority order holds with manual acks and a prefetch of the free slots: the broker
            # hands out its best messages, as many as the drone can take now, and the claims of
            # several run at once (one at a time made each drone wait for a store round trip).
            try:
                self._subscription = await self._broker.consume(
                    self._queues.drone(self.drone_id), self._on_task, prefetch=free
                )
            except TRANSIENT_ERRORS as exc:
                log.warning(
                    "cannot consume for drone %s yet: %s",
                    self.drone_id,
                    exc,
                    extra={"drone_id": self.drone_id},
                )
                self._retry_resume_later()

    def _retry_resume_later(self) -> None:
        if self._resume_retry is None or self._resume_retry.done():
            self._resume_retry = asyncio.create_task(self._resume_after_pause())

    async def _resume_after_pause(self) -> None:
        await asyncio.sleep(RESUME_RETRY_S)
        self._resume_retry = None  # so that a failure below can schedule the next attempt
        await self._fill_free_slots()


NOTIFIED_DELAY_S = 0.25
"""How long marks wait for others to go in the same store write: at a steady 250 tasks/s on
MongoDB this joins about sixty a write, where the in-flight rule alone joined one or two
(mongod's commands per task 3.1-3.2 → 2.5-2.7, and its CPU per task 11% less)."""


class NotifiedLog(WriteBehind):
    """Records in the store which final states reached their application, many per write.

    Only recovery reads notified_at (to re-send what a lost in-memory queue held), so the mark
    may trail the send: a crash in between means the app hears that state twice, never zero
    times."""

    def __init__(self, store: TaskStore) -> None:
        super().__init__(store.mark_notified, "notifications as sent", delay_s=NOTIFIED_DELAY_S)


class AppHub:
    """Every socket of one application on this gateway, fed by one consumer of its queue."""

    def __init__(self, app_id: str, broker: Broker, queues: Queues, notified: NotifiedLog) -> None:
        self.app_id = app_id
        self.sockets: set[ClientSocket] = set()
        self._broker = broker
        self._queues = queues
        self._notified = notified
        self._subscription: Subscription | None = None

    async def start(self, prefetch: int) -> None:
        if self._subscription is not None:
            return
        self._subscription = await self._broker.consume(
            self._queues.app(self.app_id), self._on_notification, prefetch=prefetch
        )

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.cancel()
            self._subscription = None

    async def _on_notification(self, delivery: Delivery) -> None:
        text = delivery.body.decode()
        sent = False
        for websocket in list(self.sockets):
            try:
                await websocket.send_text(text)
                sent = True
            except Exception:
                self.sockets.discard(websocket)
        if not sent:
            # Every socket of the app died under us: stop consuming before handing the message
            # back, or it would come straight back to this consumer.
            await self.stop()
            await delivery.reject(requeue=True)
            return
        NOTIFICATIONS_SENT.inc()
        frame = orjson.loads(delivery.body)
        final = frame.get("type") == PROCESSING_RESULT_RECEIVED or (
            frame.get("type") == TASK_STATUS_UPDATE and frame.get("status") in TERMINAL_STATUSES
        )
        if final:
            self._notified.add(frame["task_id"])


class Registry:
    """Who is connected to this gateway."""

    def __init__(self, broker: Broker, store: TaskStore, queues: Queues, prefetch: int) -> None:
        self.drones: dict[str, DroneSession] = {}
        self.apps: dict[str, AppHub] = {}
        self._broker = broker
        self._store = store
        self._queues = queues
        self._prefetch = prefetch
        self._app_lock = asyncio.Lock()
        self.notified = NotifiedLog(store)

    async def attach_drone(self, session: DroneSession) -> None:
        previous = self.drones.get(session.drone_id)
        self.drones[session.drone_id] = session
        DRONES_CONNECTED.inc()
        if previous is not None:
            # A drone that reconnects before we noticed it left: the newest connection wins.
            # The older socket may be gone already (its drone dropped it first), which must not
            # cost the newer one its start.
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await previous.websocket.close(CLOSE_SUPERSEDED, "superseded by a newer connection")
            await previous.close()
        await session.start()

    async def detach_drone(self, session: DroneSession) -> None:
        DRONES_CONNECTED.dec()
        if self.drones.get(session.drone_id) is session:
            del self.drones[session.drone_id]
        if not session.closed:
            await session.close()

    async def attach_app(self, app_id: str, websocket: ClientSocket) -> None:
        APPS_CONNECTED.inc()
        async with self._app_lock:
            hub = self.apps.get(app_id)
            if hub is None:
                hub = self.apps[app_id] = AppHub(app_id, self._broker, self._queues, self.notified)
            hub.sockets.add(websocket)
            await hub.start(self._prefetch)

    async def detach_app(self, app_id: str, websocket: ClientSocket) -> None:
        APPS_CONNECTED.dec()
        async with self._app_lock:
            hub = self.apps.get(app_id)
            if hub is None:
                return
            hub.sockets.discard(websocket)
            if not hub.sockets:
                del self.apps[app_id]
                await hub.stop()

    async def reconcile_held(self) -> int:
        """Free the slots of held tasks the store says a drone no longer holds.

        The control broadcast that tells this gateway a held task timed out or was cancelled is
        fire-and-forget: one sent while the broker restarts is lost, and the drone's slot would
        stay taken. So a held task past its in-progress deadline is checked against the store,
        and dropped if it was released, redelivered or ended meanwhile. Returns how many."""
        now = datetime.now(UTC)
        dropped = 0
        for scanned, session in enumerate(list(self.drones.values()), start=1):
            if scanned % RECONCILE_SLICE == 0:
                # 18,000 idle drones took tens of ms in one go, and deliveries waited behind it.
                await asyncio.sleep(0)
            if session.unsure_claims:
                await session.settle_unsure_claims()
            for held in list(session.held.values()):
                if held.delivered_at is None or held.timeout_s is None:
                    continue
                deadline = parse_timestamp(held.delivered_at) + timedelta(seconds=held.timeout_s)
                if deadline > now:
                    continue
                current = await self._store.get_task(held.task_id)
                still_held = (
                    current is not None
                    and not current.is_terminal
                    and current.delivery == "delivered"
                    and current.attempts == held.attempts
                )
                if still_held:
                    continue  # the dispatcher's sweep times it out; its broadcast frees the slot
                reason = (
                    "cancelled"
                    if current is not None and current.status == "cancelled"
                    else "timeout"
                )
                await session.drop(held.task_id, reason)
                dropped += 1
        return dropped

    async def on_control(self, kind: str, task_id: str, drone_id: str) -> None:
        session = self.drones.get(drone_id)
        if session is None:
            return
        if kind == "resume":
            await session.adopt(task_id)
        else:
            await session.drop(task_id, kind)
